//! Property tests of the wire codec: every message round-trips through frames, and no
//! byte string (random, chunked or a mutated valid encoding) makes a decoder panic.

// Strategy and helper functions are test code too, outside `#[test]` bodies.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{schnorr, Message, PublicKey, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use cohort_common::codec::{decode, encode, encode_frame, Encoded, FrameDecoder};
use cohort_common::keys::{to_public_key, to_secret_key};
use cohort_common::messages::*;
use cohort_common::params::{FeeSchedule, LeafOutput, TreeParams, DEFAULT_MAX_FRAME};
use musig2::secp::{MaybeScalar, Point, Scalar};
use musig2::{AggNonce, PartialSignature, PubNonce, SecNonce};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const MAX: u32 = DEFAULT_MAX_FRAME;
const LIMIT: usize = DEFAULT_MAX_FRAME as usize;

// ---- values from seeded bytes ----

fn scalar(seed: [u8; 32]) -> Scalar {
    MaybeScalar::reduce_from(&seed).not_zero().unwrap_or(Scalar::one())
}

fn point() -> impl Strategy<Value = Point> {
    any::<[u8; 32]>().prop_map(|s| scalar(s).base_point_mul())
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    point().prop_map(|p| to_public_key(&p))
}

fn pub_nonce() -> impl Strategy<Value = PubNonce> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(seed, key)| {
        SecNonce::build_with_seckey(seed, scalar(key)).build().public_nonce()
    })
}

fn agg_nonce() -> impl Strategy<Value = AggNonce> {
    vec(pub_nonce(), 1..4).prop_map(AggNonce::sum)
}

fn psig() -> impl Strategy<Value = PartialSignature> {
    any::<[u8; 32]>().prop_map(|s| MaybeScalar::reduce_from(&s))
}

fn schnorr_sig() -> impl Strategy<Value = schnorr::Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, msg)| {
        let keypair =
            bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &to_secret_key(&scalar(key)));
        SECP256K1.sign_schnorr_no_aux_rand(&Message::from_digest(msg), &keypair)
    })
}

fn script() -> impl Strategy<Value = ScriptBuf> {
    vec(any::<u8>(), 0..60).prop_map(ScriptBuf::from)
}

fn amount() -> impl Strategy<Value = Amount> {
    (0u64..=Amount::MAX_MONEY.to_sat()).prop_map(Amount::from_sat)
}

fn outpoint() -> impl Strategy<Value = OutPoint> {
    (any::<[u8; 32]>(), any::<u32>())
        .prop_map(|(t, vout)| OutPoint { txid: Txid::from_byte_array(t), vout })
}

fn reason() -> impl Strategy<Value = Reason> {
    "\\PC{0,80}".prop_map(Reason::new)
}

fn leaf_output() -> impl Strategy<Value = LeafOutput> {
    (script(), amount()).prop_map(|(script_pubkey, amount)| LeafOutput { script_pubkey, amount })
}

fn tx_out() -> impl Strategy<Value = TxOut> {
    (script(), amount()).prop_map(|(script_pubkey, value)| TxOut { value, script_pubkey })
}

fn transaction() -> impl Strategy<Value = Transaction> {
    let input = (outpoint(), script(), any::<u32>(), vec(vec(any::<u8>(), 0..80), 0..3)).prop_map(
        |(previous_output, script_sig, seq, witness)| TxIn {
            previous_output,
            script_sig,
            sequence: Sequence(seq),
            witness: Witness::from_slice(&witness),
        },
    );
    (any::<i32>(), any::<u32>(), vec(input, 1..4), vec(tx_out(), 0..4)).prop_map(
        |(version, lock, input, output)| Transaction {
            version: Version(version),
            lock_time: LockTime::from_consensus(lock),
            input,
            output,
        },
    )
}

fn tree_params() -> impl Strategy<Value = TreeParams> {
    (any::<u8>(), any::<u8>()).prop_map(|(radix, max_depth)| TreeParams { radix, max_depth })
}

fn fee_schedule() -> impl Strategy<Value = FeeSchedule> {
    (any::<u64>(), amount(), any::<u32>()).prop_map(|(rate, service_base, service_ppm)| {
        FeeSchedule { fee_rate: FeeRate::from_sat_per_kwu(rate), service_base, service_ppm }
    })
}

// ---- messages ----

fn round_params() -> impl Strategy<Value = RoundParams> {
    (
        (any::<u64>(), tree_params(), fee_schedule(), public_key()),
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<u16>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u8>()),
    )
        .prop_map(
            |((round, tree, fees, coordinator_key), (a, b, c, d), (e, f, g, h, i, j))| {
                RoundParams {
                    round,
                    tree,
                    fees,
                    coordinator_key,
                    exit_csv: a,
                    max_deposit_csv: b,
                    min_confs: c,
                    safety_margin: d,
                    max_leaves_per_registration: e,
                    max_deposits_per_registration: f,
                    max_batch_weight: g,
                    registration_closes_ms: h,
                    phase_timeout_ms: i,
                    max_attempts: j,
                }
            },
        )
}

fn register() -> impl Strategy<Value = Register> {
    let deposit = (outpoint(), public_key(), any::<u16>(), pub_nonce()).prop_map(
        |(outpoint, user_key, deposit_csv, nonce)| DepositRegistration {
            outpoint,
            user_key,
            deposit_csv,
            nonce,
        },
    );
    let leaf = (leaf_output(), point(), vec(pub_nonce(), 0..4))
        .prop_map(|(output, cosigner, nonces)| LeafRequest { output, cosigner, nonces });
    let remainder = (script(), point(), vec(pub_nonce(), 0..4)).prop_map(
        |(script_pubkey, cosigner, nonces)| RemainderRequest { script_pubkey, cosigner, nonces },
    );
    (
        any::<u64>(),
        vec(deposit, 0..3),
        vec(leaf, 0..3),
        remainder,
        amount(),
        vec(schnorr_sig(), 0..3),
    )
        .prop_map(|(round, deposits, leaves, remainder, max_fee, ownership_sigs)| Register {
            body: RegisterBody { round, deposits, leaves, remainder, max_fee },
            ownership_sigs,
        })
}

fn refusal_reason() -> impl Strategy<Value = RefusalReason> {
    use RefusalReason::*;
    prop_oneof![
        outpoint().prop_map(UnknownDeposit),
        outpoint().prop_map(Unconfirmed),
        outpoint().prop_map(Spent),
        outpoint().prop_map(Expiring),
        outpoint().prop_map(Banned),
        outpoint().prop_map(NotDepositAddress),
        outpoint().prop_map(DuplicateDeposit),
        any::<u32>().prop_map(|deposit| BadOwnershipSignature { deposit }),
        (any::<u32>(), any::<u32>()).prop_map(|(deposits, sigs)| SignatureCount { deposits, sigs }),
        any::<u32>().prop_map(|leaf| Dust { leaf }),
        any::<u32>().prop_map(|leaf| NonStandardScript { leaf }),
        (any::<u32>(), any::<u32>()).prop_map(|(expected, got)| BadNonceCount { expected, got }),
        Just(DuplicateCosigner),
        (any::<u32>(), any::<u32>()).prop_map(|(count, max)| TooManyLeaves { count, max }),
        (any::<u32>(), any::<u32>()).prop_map(|(count, max)| TooManyDeposits { count, max }),
        Just(NoDeposits),
        (any::<u16>(), any::<u16>()).prop_map(|(csv, max)| DepositCsvTooLarge { csv, max }),
        (amount(), amount()).prop_map(|(max_fee, required)| FeeTooLow { max_fee, required }),
        (amount(), amount())
            .prop_map(|(available, needed)| InsufficientFunds { available, needed }),
        (any::<u64>(), any::<u64>()).prop_map(|(expected, got)| WrongRound { expected, got }),
        Just(RegistrationClosed),
        reason().prop_map(Other),
    ]
}

fn abort_reason() -> impl Strategy<Value = AbortReason> {
    prop_oneof![
        Just(AbortReason::Timeout),
        Just(AbortReason::InvalidPartialSignature),
        Just(AbortReason::InvalidMessage),
        Just(AbortReason::Cancelled),
        Just(AbortReason::MaxAttempts),
        Just(AbortReason::Shutdown),
        reason().prop_map(AbortReason::Other),
        reason().prop_map(AbortReason::BroadcastFailed),
    ]
}

fn proposal_body() -> impl Strategy<Value = ProposalBody> {
    let leaf =
        (leaf_output(), point()).prop_map(|(output, cosigner)| TreeLeaf { output, cosigner });
    (
        (any::<u64>(), any::<u32>(), any::<u32>()),
        transaction(),
        vec(tx_out(), 0..4),
        vec(leaf, 0..6),
        point(),
        tree_params(),
    )
        .prop_map(
            |((round, batch, attempt), funding_tx, funding_prevouts, leaves, batch_key, tree)| {
                ProposalBody {
                    round,
                    batch,
                    attempt,
                    funding_tx,
                    funding_prevouts,
                    leaves,
                    batch_key,
                    tree,
                }
            },
        )
}

fn proposal() -> impl Strategy<Value = Proposal> {
    let node_nonce =
        (any::<u32>(), agg_nonce()).prop_map(|(node, nonce)| NodeNonce { node, nonce });
    (
        proposal_body(),
        vec(any::<u32>(), 0..4),
        vec(node_nonce, 0..4),
        vec(any::<u32>(), 0..3),
        vec(pub_nonce(), 0..3),
    )
        .prop_map(
            |(body, your_leaves, node_nonces, deposit_inputs, coordinator_deposit_nonces)| {
                Proposal {
                    body: Encoded::new(&body).expect("encodes"),
                    your_leaves,
                    node_nonces,
                    deposit_inputs,
                    coordinator_deposit_nonces,
                }
            },
        )
}

fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
    let node_partial = (any::<u32>(), any::<u32>(), psig())
        .prop_map(|(node, leaf, psig)| NodePartial { node, leaf, psig });
    let deposit_partial =
        (any::<u32>(), psig()).prop_map(|(input, psig)| DepositPartial { input, psig });
    let leaf_nonces = (point(), vec(pub_nonce(), 0..3))
        .prop_map(|(cosigner, nonces)| LeafNonces { cosigner, nonces });
    prop_oneof![
        any::<u32>().prop_map(|version| ToCoordinator::Hello(Hello { version })),
        register().prop_map(ToCoordinator::Register),
        (any::<u32>(), any::<u32>(), vec(node_partial, 0..5)).prop_map(|(batch, attempt, sigs)| {
            ToCoordinator::TreeSigs(TreeSigs { batch, attempt, sigs })
        }),
        (any::<u32>(), any::<u32>(), vec(deposit_partial, 0..5)).prop_map(
            |(batch, attempt, sigs)| ToCoordinator::DepositSigs(DepositSigs {
                batch,
                attempt,
                sigs
            })
        ),
        (any::<u32>(), any::<u32>(), vec(leaf_nonces, 0..3), vec(pub_nonce(), 0..3)).prop_map(
            |(batch, attempt, leaves, deposit_nonces)| {
                ToCoordinator::Renonce(Renonce { batch, attempt, leaves, deposit_nonces })
            }
        ),
        reason().prop_map(|reason| ToCoordinator::Cancel(Cancel { reason })),
        reason().prop_map(|reason| ToCoordinator::Goodbye(Goodbye { reason })),
    ]
}

fn to_participant() -> impl Strategy<Value = ToParticipant> {
    let node_sig =
        (any::<u32>(), schnorr_sig()).prop_map(|(node, sig)| NodeSignature { node, sig });
    prop_oneof![
        any::<u32>().prop_map(|version| ToParticipant::Hello(Hello { version })),
        (any::<u64>(), any::<u32>(), round_params(), any::<[u8; 32]>()).prop_map(
            |(round, attempt, params, challenge)| {
                ToParticipant::RoundAnnounce(RoundAnnounce { round, attempt, params, challenge })
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(round, registration)| {
            ToParticipant::Registered(Registered { round, registration })
        }),
        refusal_reason().prop_map(|reason| ToParticipant::Refused(Refused { reason })),
        proposal().prop_map(ToParticipant::Proposal),
        (any::<u32>(), any::<u32>(), vec(node_sig, 0..5)).prop_map(|(batch, attempt, sigs)| {
            ToParticipant::SignedTree(SignedTree { batch, attempt, sigs })
        }),
        (any::<u32>(), any::<[u8; 32]>()).prop_map(|(batch, t)| {
            ToParticipant::Finalized(Finalized { batch, txid: Txid::from_byte_array(t) })
        }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(batch, height)| ToParticipant::Confirmed(Confirmed { batch, height })),
        (any::<u32>(), any::<u32>(), abort_reason(), vec(any::<u64>(), 0..5)).prop_map(
            |(batch, attempt, reason, excluded)| {
                ToParticipant::Abort(Abort { batch, attempt, reason, excluded })
            }
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(batch, attempt)| ToParticipant::NonceRequest(
            NonceRequest { batch, attempt }
        )),
        reason().prop_map(|reason| ToParticipant::Goodbye(Goodbye { reason })),
    ]
}

// ---- helpers ----

/// Feeds `stream` to a decoder in chunks of the given sizes (cycled), collecting every
/// frame and the first error.
fn split_frames(stream: &[u8], chunks: &[usize], max: u32) -> (Vec<Vec<u8>>, Option<String>) {
    let mut dec = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
        if rest.is_empty() {
            return (frames, None);
        }
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        dec.push(head);
        rest = tail;
    }
}

fn round_trip<T>(msgs: &[T], chunks: &[usize]) -> Vec<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut stream = Vec::new();
    for m in msgs {
        stream.extend(encode_frame(m, MAX).expect("encodes"));
    }
    let (frames, err) = split_frames(&stream, chunks, MAX);
    assert_eq!(err, None);
    frames.iter().map(|f| decode::<T>(f, LIMIT).expect("decodes")).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match *m {
            Mutation::Flip(i, x) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            Mutation::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.insert(i, b);
            }
            Mutation::Delete(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

/// Decodes as a participant would, including a proposal's shared body: Ok or Err, no panic.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<ToCoordinator>(bytes, LIMIT);
    if let Ok(ToParticipant::Proposal(p)) = decode::<ToParticipant>(bytes, LIMIT) {
        let _ = p.body.decode(LIMIT);
    }
    let _ = decode::<ProposalBody>(bytes, LIMIT);
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn to_coordinator_round_trips(msgs in vec(to_coordinator(), 1..4), chunks in vec(1usize..200, 1..8)) {
        prop_assert_eq!(round_trip(&msgs, &chunks), msgs);
    }

    #[test]
    fn to_participant_round_trips(msgs in vec(to_participant(), 1..4), chunks in vec(1usize..200, 1..8)) {
        let back = round_trip(&msgs, &chunks);
        for (m, b) in msgs.iter().zip(&back) {
            if let (ToParticipant::Proposal(p), ToParticipant::Proposal(q)) = (m, b) {
                prop_assert_eq!(q.body.decode(LIMIT).expect("body decodes"), p.body.decode(LIMIT).expect("body decodes"));
            }
        }
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn proposal_body_round_trips(body in proposal_body()) {
        let enc = Encoded::new(&body).expect("encodes");
        prop_assert_eq!(enc.decode(LIMIT).expect("decodes"), body);
    }

    #[test]
    fn register_digest_is_stable_through_the_wire(reg in register(), challenge in any::<[u8; 32]>()) {
        let back: Register = decode(&encode(&reg).expect("encodes"), LIMIT).expect("decodes");
        prop_assert_eq!(back.body.ownership_message(&challenge).expect("hashes"),
                        reg.body.ownership_message(&challenge).expect("hashes"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
        let _ = split_frames(&bytes, &[bytes.len().max(1)], 256);
    }

    #[test]
    fn chunking_does_not_change_frames(bytes in vec(any::<u8>(), 0..600), chunks in vec(1usize..50, 1..10)) {
        // Small max frame so that random headers are sometimes accepted.
        let whole = split_frames(&bytes, &[bytes.len().max(1)], 300);
        let chunked = split_frames(&bytes, &chunks, 300);
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn mutated_to_coordinator_never_panics(msg in to_coordinator(), muts in vec(mutation(), 1..6)) {
        let bytes = encode(&msg).expect("encodes");
        decode_all(&mutate(bytes, &muts));
    }

    #[test]
    fn mutated_to_participant_never_panics(msg in to_participant(), muts in vec(mutation(), 1..6)) {
        let bytes = encode(&msg).expect("encodes");
        decode_all(&mutate(bytes, &muts));
    }

    #[test]
    fn mutated_proposal_body_never_panics(body in proposal_body(), muts in vec(mutation(), 1..6)) {
        let msg = ToParticipant::Proposal(Proposal {
            body: Encoded::from_bytes(mutate(encode(&body).expect("encodes"), &muts)),
            your_leaves: vec![0],
            node_nonces: vec![],
            deposit_inputs: vec![],
            coordinator_deposit_nonces: vec![],
        });
        decode_all(&encode(&msg).expect("encodes"));
    }
}

#[test]
fn every_variant_survives_the_frame_path_once() {
    // A fixed case per enum, so a failure here names the variant without shrinking.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..64 {
        let c = to_coordinator().new_tree(&mut runner).expect("value").current();
        assert_eq!(round_trip(std::slice::from_ref(&c), &[7]), vec![c]);
        let p = to_participant().new_tree(&mut runner).expect("value").current();
        assert_eq!(round_trip(std::slice::from_ref(&p), &[7]), vec![p]);
    }
}

#[test]
fn oversize_reason_from_a_peer_is_refused() {
    // Hand-build a Goodbye whose reason is 300 bytes (above MAX_REASON_LEN).
    let good =
        encode(&ToCoordinator::Goodbye(Goodbye { reason: Reason::new("x") })).expect("encodes");
    let mut bytes = good[..1].to_vec(); // variant tag
    bytes.extend(encode(&"y".repeat(300)).expect("encodes"));
    let err = decode::<ToCoordinator>(&bytes, LIMIT).expect_err("too long");
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
}
