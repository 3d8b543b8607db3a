//! Well-formed values of every decoded type, built from fixed keys: the seed corpora and
//! the valid stores the store targets damage are made of these.
//!
//! Keys are real secp256k1 keys, nonces real MuSig2 nonces, ownership signatures real
//! BIP-340 signatures over the registration's ownership message, and transactions
//! consensus-valid in form (they spend made-up outpoints).

use cohort_common::bitcoin::absolute::LockTime;
use cohort_common::bitcoin::hashes::Hash;
use cohort_common::bitcoin::secp256k1::{self, SecretKey};
use cohort_common::bitcoin::transaction::Version;
use cohort_common::bitcoin::{
    Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use cohort_common::codec::Encoded;
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    Abort, AbortReason, Cancel, Confirmed, DepositPartial, DepositRegistration, DepositSigs,
    Finalized, Goodbye, Hello, LeafNonces, LeafRequest, NodeNonce, NodePartial, NodeSignature,
    NonceRequest, Proposal, ProposalBody, Reason, RefusalReason, Refused, Register, RegisterBody,
    Registered, RemainderRequest, Renonce, RoundAnnounce, RoundParams, ServerInfo, SideRequest,
    SideResponse, SignedTree, ToCoordinator, ToParticipant, TreeLeaf, TreeSigs, Withdraw,
    WithdrawBody, WithdrawInput, WithdrawSigned,
};
use cohort_common::musig::secnonce_from_seed;
use cohort_common::musig2::secp::MaybeScalar;
use cohort_common::musig2::{AggNonce, PubNonce};
use cohort_common::params::{FeeSchedule, LeafOutput, TreeParams, PROTOCOL_VERSION};

/// Key number `n` (from 1), derived from a fixed secret.
pub fn key(n: u8) -> Keypair {
    let mut secret = [0x11; 32];
    secret[0] = n;
    Keypair::from_secret(SecretKey::from_slice(&secret).expect("a small fixed secret is valid"))
}

/// A real public MuSig2 nonce of key `n`.
pub fn nonce(n: u8) -> PubNonce {
    secnonce_from_seed([n; 32], &key(n).point).public_nonce()
}

/// The aggregate of the nonces of keys `1..=n`.
pub fn agg_nonce(n: u8) -> AggNonce {
    AggNonce::sum((1..=n).map(nonce))
}

/// A made-up txid.
pub fn txid(n: u8) -> Txid {
    Txid::from_byte_array([n; 32])
}

/// A made-up outpoint.
pub fn outpoint(n: u8) -> OutPoint {
    OutPoint { txid: txid(n), vout: u32::from(n) }
}

/// The key-path P2TR script of key `n`.
pub fn p2tr(n: u8) -> ScriptBuf {
    let mut script = vec![0x51, 0x20];
    script.extend(key(n).xonly().serialize());
    ScriptBuf::from_bytes(script)
}

/// A one-input, `outputs`-output segwit transaction.
pub fn tx(n: u8, outputs: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: outpoint(n),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::from_slice(&[[n; 64]]),
        }],
        output: (0..outputs)
            .map(|i| TxOut {
                value: Amount::from_sat(10_000 + u64::from(i)),
                script_pubkey: p2tr(i + 1),
            })
            .collect(),
    }
}

fn partial(n: u8) -> MaybeScalar {
    MaybeScalar::from_slice(&[n; 32]).expect("a small scalar is in range")
}

/// Round parameters as a coordinator announces them.
pub fn round_params() -> RoundParams {
    RoundParams {
        round: 8,
        tree: TreeParams::default(),
        fees: FeeSchedule::default(),
        coordinator_key: key(1).public,
        exit_csv: 144,
        max_deposit_csv: 4_320,
        min_confs: 1,
        safety_margin: 6,
        max_leaves_per_registration: 16,
        max_deposits_per_registration: 16,
        max_batch_weight: 400_000,
        registration_closes_ms: 30_000,
        phase_timeout_ms: 10_000,
        max_attempts: 3,
    }
}

/// A registration of one deposit and one leaf, signed by its deposit key.
pub fn register() -> Register {
    let depth = TreeParams::default().max_depth;
    let body = RegisterBody {
        round: 8,
        deposits: vec![DepositRegistration {
            outpoint: outpoint(3),
            user_key: key(2).public,
            deposit_csv: 1_008,
            nonce: nonce(2),
        }],
        leaves: vec![LeafRequest {
            output: LeafOutput { script_pubkey: p2tr(4), amount: Amount::from_sat(50_000) },
            cosigner: key(5).point,
            nonces: (0..depth).map(|i| nonce(10 + i)).collect(),
        }],
        remainder: RemainderRequest {
            script_pubkey: p2tr(6),
            cosigner: key(7).point,
            nonces: (0..depth).map(|i| nonce(20 + i)).collect(),
        },
        max_fee: Amount::from_sat(2_000),
    };
    let message = body.ownership_message(&[9; 32]).expect("a registration encodes");
    let signer = secp256k1::Keypair::from_secret_key(secp256k1::SECP256K1, &key(2).secret);
    let sig = secp256k1::SECP256K1
        .sign_schnorr_no_aux_rand(&secp256k1::Message::from_digest(message), &signer);
    Register { body, ownership_sigs: vec![sig] }
}

/// A proposal body of three leaves under the default tree.
pub fn proposal_body() -> ProposalBody {
    let funding = tx(3, 2);
    ProposalBody {
        round: 8,
        batch: 0,
        attempt: 1,
        funding_prevouts: vec![TxOut { value: Amount::from_sat(100_000), script_pubkey: p2tr(9) }],
        funding_tx: funding,
        leaves: (1..=3)
            .map(|i| TreeLeaf {
                output: LeafOutput {
                    script_pubkey: p2tr(i),
                    amount: Amount::from_sat(20_000 * u64::from(i)),
                },
                cosigner: key(30 + i).point,
            })
            .collect(),
        batch_key: key(40).point,
        tree: TreeParams::default(),
    }
}

/// A cooperative withdrawal of two deposits of key 2, each with its real ownership
/// signature over the body.
pub fn withdraw() -> Withdraw {
    let mut unsigned = tx(3, 1);
    unsigned.input.push(TxIn { previous_output: outpoint(4), ..unsigned.input[0].clone() });
    for input in &mut unsigned.input {
        input.witness = Witness::new();
    }
    let body = WithdrawBody {
        inputs: unsigned
            .input
            .iter()
            .zip([60u8, 61])
            .map(|(input, n)| WithdrawInput {
                outpoint: input.previous_output,
                user_key: key(2).public,
                deposit_csv: 1_008,
                nonce: nonce(n),
            })
            .collect(),
        tx: unsigned,
    };
    let message = body.ownership_message().expect("a withdrawal encodes");
    let signer = secp256k1::Keypair::from_secret_key(secp256k1::SECP256K1, &key(2).secret);
    let sig = secp256k1::SECP256K1
        .sign_schnorr_no_aux_rand(&secp256k1::Message::from_digest(message), &signer);
    Withdraw { ownership_sigs: vec![sig; body.inputs.len()], body }
}

/// The coordinator's half of [`withdraw`]'s signatures.
pub fn withdraw_signed() -> WithdrawSigned {
    WithdrawSigned {
        txid: withdraw().body.tx.compute_txid(),
        nonces: vec![nonce(62), nonce(63)],
        partials: vec![partial(9), partial(10)],
    }
}

/// Every `ToCoordinator` variant.
pub fn to_coordinator() -> Vec<(&'static str, ToCoordinator)> {
    vec![
        ("hello", ToCoordinator::Hello(Hello { version: PROTOCOL_VERSION })),
        ("register", ToCoordinator::Register(register())),
        (
            "tree-sigs",
            ToCoordinator::TreeSigs(TreeSigs {
                batch: 0,
                attempt: 1,
                sigs: (0..3).map(|n| NodePartial { node: n, leaf: 1, psig: partial(7) }).collect(),
            }),
        ),
        (
            "deposit-sigs",
            ToCoordinator::DepositSigs(DepositSigs {
                batch: 0,
                attempt: 1,
                sigs: vec![DepositPartial { input: 0, psig: partial(8) }],
            }),
        ),
        (
            "renonce",
            ToCoordinator::Renonce(Renonce {
                batch: 0,
                attempt: 2,
                leaves: vec![LeafNonces { cosigner: key(50).point, nonces: vec![nonce(51)] }],
                deposit_nonces: vec![nonce(52)],
            }),
        ),
        ("cancel", ToCoordinator::Cancel(Cancel { reason: Reason::new("changed my mind") })),
        ("goodbye", ToCoordinator::Goodbye(Goodbye { reason: Reason::new("done") })),
        ("withdraw", ToCoordinator::Withdraw(withdraw())),
    ]
}

/// Every `ToParticipant` variant.
pub fn to_participant() -> Vec<(&'static str, ToParticipant)> {
    let body = Encoded::new(&proposal_body()).expect("a proposal body encodes");
    let sig = secp256k1::schnorr::Signature::from_slice(&[3; 64]).expect("64 bytes");
    vec![
        ("hello", ToParticipant::Hello(Hello { version: PROTOCOL_VERSION })),
        (
            "round-announce",
            ToParticipant::RoundAnnounce(RoundAnnounce {
                round: 8,
                attempt: 0,
                params: round_params(),
                challenge: [9; 32],
            }),
        ),
        ("registered", ToParticipant::Registered(Registered { round: 8, registration: 1 })),
        ("refused", ToParticipant::Refused(Refused { reason: RefusalReason::Banned(outpoint(3)) })),
        (
            "proposal",
            ToParticipant::Proposal(Proposal {
                body,
                your_leaves: vec![0, 2],
                node_nonces: vec![NodeNonce { node: 0, nonce: agg_nonce(3) }],
                deposit_inputs: vec![0],
                coordinator_deposit_nonces: vec![nonce(60)],
            }),
        ),
        (
            "signed-tree",
            ToParticipant::SignedTree(SignedTree {
                batch: 0,
                attempt: 1,
                sigs: vec![NodeSignature { node: 0, sig }],
            }),
        ),
        ("finalized", ToParticipant::Finalized(Finalized { batch: 0, txid: txid(70) })),
        ("confirmed", ToParticipant::Confirmed(Confirmed { batch: 0, height: 812 })),
        (
            "abort",
            ToParticipant::Abort(Abort {
                batch: 0,
                attempt: 1,
                reason: AbortReason::Other(Reason::new("fee spike")),
                excluded: vec![2, 5],
            }),
        ),
        ("nonce-request", ToParticipant::NonceRequest(NonceRequest { batch: 0, attempt: 2 })),
        ("goodbye", ToParticipant::Goodbye(Goodbye { reason: Reason::new("shutting down") })),
        ("withdraw-signed", ToParticipant::WithdrawSigned(withdraw_signed())),
    ]
}

/// Every `SideRequest` variant.
pub fn side_requests() -> Vec<(&'static str, SideRequest)> {
    vec![("info", SideRequest::Info)]
}

/// Every `SideResponse` variant.
pub fn side_responses() -> Vec<(&'static str, SideResponse)> {
    vec![
        (
            "info",
            SideResponse::Info(ServerInfo {
                version: PROTOCOL_VERSION,
                coordinator_key: key(1).public,
                network: Network::Regtest,
                deposit_csv: 1_008,
                exit_csv: 144,
                dev: true,
                dev_chain: Some([9; 16]),
                dev_rpc_port: Some(18_443),
            }),
        ),
        ("error", SideResponse::Error(Reason::new("not now"))),
    ]
}
