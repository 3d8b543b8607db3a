//! The round engine refuses every bad registration with its typed reason, against a
//! real chain view (the embedded ledger); it co-signs a cooperative withdrawal only after
//! its checks, and keeps a withdrawn deposit out of every later round.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::{Amount, OutPoint, ScriptBuf};
use rand::SeedableRng;

use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{
    DepositRegistration, LeafRequest, RefusalReason, Register, RegisterBody, RemainderRequest,
    ToCoordinator, ToParticipant, Withdraw, WithdrawBody, WithdrawInput,
};
use cohort_common::musig::{self, new_secnonce, Contribution};
use cohort_common::params::{LeafOutput, DEFAULT_MAX_DEPTH};
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::{
    withdraw_lookup, ChainFacts, ChainOutage, Coordinator, CoordinatorConfig, DepositLookup,
    Inbound,
};

struct World {
    ledger: Ledger,
    engine: Coordinator,
    coordinator: Keypair,
    rng: rand::rngs::StdRng,
    now: Instant,
    round: u64,
    connected: std::collections::HashSet<u64>,
    challenge: [u8; 32],
}

fn world() -> World {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let coordinator = Keypair::from_rng(&mut rng);
    let config = CoordinatorConfig::new(p2tr_single(&Keypair::from_rng(&mut rng)));
    let mut engine = Coordinator::new(coordinator.clone(), config).unwrap();
    let ledger = Ledger::new();
    ledger.mine(200);
    let now = Instant::now();
    let round = engine.start_round(now);
    let challenge = engine.challenge().unwrap();
    World { challenge, ledger, engine, coordinator, rng, now, round, connected: Default::default() }
}

/// A correct registration of one funded deposit of `amount` with `csv`, its body and key.
fn registration(w: &mut World, amount: u64, csv: u16) -> (RegisterBody, Keypair, OutPoint) {
    let user = Keypair::from_rng(&mut w.rng);
    let script = DepositScript::new(user.public, w.coordinator.public, csv).unwrap();
    let outpoint = w.ledger.faucet(&script.script_pubkey(), Amount::from_sat(amount)).unwrap();
    let nonce = |p: &Keypair| new_secnonce(&p.point, None, None).public_nonce();
    let cosigner = Keypair::from_rng(&mut w.rng);
    let remainder_key = Keypair::from_rng(&mut w.rng);
    let body = RegisterBody {
        round: w.round,
        deposits: vec![DepositRegistration {
            outpoint,
            user_key: user.public,
            deposit_csv: csv,
            nonce: nonce(&user),
        }],
        leaves: vec![LeafRequest {
            output: LeafOutput {
                script_pubkey: p2tr_single(&Keypair::from_rng(&mut w.rng)),
                amount: Amount::from_sat(10_000),
            },
            cosigner: cosigner.point,
            nonces: (0..DEFAULT_MAX_DEPTH).map(|_| nonce(&cosigner)).collect(),
        }],
        remainder: RemainderRequest {
            script_pubkey: p2tr_single(&remainder_key),
            cosigner: remainder_key.point,
            nonces: (0..DEFAULT_MAX_DEPTH).map(|_| nonce(&remainder_key)).collect(),
        },
        max_fee: Amount::from_sat(20_000),
    };
    (body, user, outpoint)
}

fn sign(body: &RegisterBody, user: &Keypair, challenge: &[u8; 32]) -> Register {
    let msg = Message::from_digest(body.ownership_message(challenge).unwrap());
    let kp = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &user.secret);
    Register { body: body.clone(), ownership_sigs: vec![SECP256K1.sign_schnorr(&msg, &kp)] }
}

fn submit(w: &mut World, peer: u64, reg: Register) -> Result<u64, RefusalReason> {
    if w.connected.insert(peer) {
        w.engine.peer_connected(w.now, peer);
    }
    let max = w.engine.max_deposits_per_registration();
    let input = Inbound::resolve(ToCoordinator::Register(reg), &w.ledger, max);
    w.engine.handle_message(w.now, peer, input);
    let mut answer = None;
    while let Some((to, msg)) = w.engine.poll_transmit() {
        match msg {
            ToParticipant::Registered(r) if to == peer => answer = Some(Ok(r.registration)),
            ToParticipant::Refused(r) if to == peer => answer = Some(Err(r.reason)),
            _ => {}
        }
    }
    answer.expect("an answer")
}

/// Signs `body` for the round's challenge and registers it.
fn submit_signed(
    w: &mut World,
    peer: u64,
    body: &RegisterBody,
    user: &Keypair,
) -> Result<u64, RefusalReason> {
    let reg = sign(body, user, &w.challenge);
    submit(w, peer, reg)
}

/// Registers `body` as changed by `change`, re-signed by its owner.
fn submit_changed(
    w: &mut World,
    peer: u64,
    change: impl FnOnce(&mut RegisterBody),
) -> Result<u64, RefusalReason> {
    let (mut body, user, _) = registration(w, 100_000, 14_400);
    change(&mut body);
    let reg = sign(&body, &user, &w.challenge);
    submit(w, peer, reg)
}

#[test]
fn a_correct_registration_is_accepted_once() {
    let mut w = world();
    let (body, user, outpoint) = registration(&mut w, 100_000, 14_400);
    assert!(submit_signed(&mut w, 10, &body, &user).is_ok());
    // The same deposit again, from another peer, with fresh cosigner keys.
    let (mut again, _, _) = registration(&mut w, 100_000, 14_400);
    again.deposits = body.deposits.clone();
    let r = submit_signed(&mut w, 11, &again, &user);
    assert_eq!(r, Err(RefusalReason::DuplicateDeposit(outpoint)));
    // The very same registration again: its cosigner keys are taken too.
    let r = submit_signed(&mut w, 12, &body, &user);
    assert_eq!(r, Err(RefusalReason::DuplicateCosigner));
}

#[test]
fn bad_registrations_get_their_reasons() {
    let mut w = world();

    let (body, user, _) = registration(&mut w, 100_000, 14_400);
    let mut reg = sign(&body, &user, &w.challenge);
    let mut bytes = *reg.ownership_sigs[0].as_ref();
    bytes[5] ^= 1;
    reg.ownership_sigs[0] = bitcoin::secp256k1::schnorr::Signature::from_slice(&bytes).unwrap();
    assert_eq!(submit(&mut w, 20, reg), Err(RefusalReason::BadOwnershipSignature { deposit: 0 }));

    let mut unknown = OutPoint::null();
    let r = submit_changed(&mut w, 21, |b| {
        b.deposits[0].outpoint.txid =
            bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::from_byte_array([0x42; 32]));
        unknown = b.deposits[0].outpoint;
    });
    assert_eq!(r, Err(RefusalReason::UnknownDeposit(unknown)));

    let r = submit_changed(&mut w, 22, |b| b.round += 1);
    assert!(matches!(r, Err(RefusalReason::WrongRound { .. })));

    let r = submit_changed(&mut w, 23, |b| b.leaves[0].output.amount = Amount::from_sat(100));
    assert_eq!(r, Err(RefusalReason::Dust { leaf: 0 }));

    let r = submit_changed(&mut w, 24, |b| {
        b.leaves[0].output.script_pubkey = ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x01]);
    });
    assert_eq!(r, Err(RefusalReason::NonStandardScript { leaf: 0 }));

    let r = submit_changed(&mut w, 25, |b| {
        b.remainder.nonces.pop();
    });
    let (expected, got) = (DEFAULT_MAX_DEPTH.into(), (DEFAULT_MAX_DEPTH - 1).into());
    assert_eq!(r, Err(RefusalReason::BadNonceCount { expected, got }));

    let r = submit_changed(&mut w, 26, |b| b.max_fee = Amount::from_sat(10));
    assert!(matches!(r, Err(RefusalReason::FeeTooLow { .. })));

    let r = submit_changed(&mut w, 27, |b| b.deposits[0].deposit_csv = 30_000);
    assert!(matches!(r, Err(RefusalReason::DepositCsvTooLarge { csv: 30_000, .. })));

    let r = submit_changed(&mut w, 28, |b| b.remainder.cosigner = b.leaves[0].cosigner);
    assert_eq!(r, Err(RefusalReason::DuplicateCosigner));

    let (body, user, _) = registration(&mut w, 10_500, 14_400);
    let r = submit_signed(&mut w, 29, &body, &user);
    assert!(matches!(r, Err(RefusalReason::InsufficientFunds { .. })));

    // A deposit whose timeout is within the safety margin (144 blocks).
    let (body, user, outpoint) = registration(&mut w, 100_000, 100);
    let r = submit_signed(&mut w, 30, &body, &user);
    assert_eq!(r, Err(RefusalReason::Expiring(outpoint)));

    // A banned deposit.
    let (body, user, outpoint) = registration(&mut w, 100_000, 14_400);
    w.engine.restore_ban(outpoint, w.now + Duration::from_secs(60), 1);
    let r = submit_signed(&mut w, 31, &body, &user);
    assert_eq!(r, Err(RefusalReason::Banned(outpoint)));

    // A peer registers once per round.
    let (body, user, _) = registration(&mut w, 100_000, 14_400);
    assert!(submit_signed(&mut w, 32, &body, &user).is_ok());
    let (body, user, _) = registration(&mut w, 100_000, 14_400);
    assert!(matches!(submit_signed(&mut w, 32, &body, &user), Err(RefusalReason::Other(_))));
}

#[test]
fn amounts_outside_the_money_range_are_refused_at_registration() {
    let mut w = world();
    // Two deposits whose amounts, as the chain backend reports them, are 20 M BTC each:
    // each is in range, together they are not. No real chain holds that (the dev ledger's
    // faucet stops at 21 M BTC too), so the backend's answer is inflated here; a funding
    // transaction holding them would be found invalid only at broadcast, after every
    // member signed.
    let (mut body, user, _) = registration(&mut w, 100_000, 14_400);
    let script = DepositScript::new(user.public, w.coordinator.public, 14_400).unwrap();
    let outpoint = w.ledger.faucet(&script.script_pubkey(), Amount::from_sat(100_000));
    let mut second = body.deposits[0].clone();
    second.outpoint = outpoint.unwrap();
    second.nonce = new_secnonce(&user.point, None, None).public_nonce();
    body.deposits.push(second);
    let msg = Message::from_digest(body.ownership_message(&w.challenge).unwrap());
    let kp = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &user.secret);
    let sig = SECP256K1.sign_schnorr(&msg, &kp);
    let reg = Register { body, ownership_sigs: vec![sig, sig] };
    let max = w.engine.max_deposits_per_registration();
    let mut facts = ChainFacts::lookup(&w.ledger, &reg, max).unwrap();
    for lookup in &mut facts.deposits {
        let DepositLookup::Unspent(utxo) = lookup else { panic!("{lookup:?}") };
        utxo.txout.value = Amount::from_sat(20_000_000 * 100_000_000);
    }
    w.engine.peer_connected(w.now, 40);
    w.engine.handle_message(w.now, 40, Inbound::Register(Box::new(reg), Ok(facts)));
    let answer = std::iter::from_fn(|| w.engine.poll_transmit()).find_map(|(to, msg)| match msg {
        ToParticipant::Refused(r) if to == 40 => Some(r.reason),
        _ => None,
    });
    assert_eq!(answer, Some(RefusalReason::OutsideMoneyRange { deposits: true }));

    // A leaf above 21 M BTC, paid (on paper) by a small deposit.
    let r = submit_changed(&mut w, 41, |b| {
        b.leaves[0].output.amount = Amount::MAX_MONEY + Amount::from_sat(1);
    });
    assert_eq!(r, Err(RefusalReason::OutsideMoneyRange { deposits: false }));
}

#[test]
fn spent_and_unconfirmed_deposits_are_refused() {
    let mut w = world();
    // Spent: the deposit's outpoint was consumed (here: by a reclaim after its csv).
    let csv = 150;
    let (body, user, outpoint) = registration(&mut w, 100_000, csv);
    let script = DepositScript::new(user.public, w.coordinator.public, csv).unwrap();
    w.ledger.mine(u32::from(csv));
    let txout =
        bitcoin::TxOut { value: Amount::from_sat(100_000), script_pubkey: script.script_pubkey() };
    let rate = bitcoin::FeeRate::from_sat_per_vb(2).unwrap();
    let tx =
        cohort_common::exit::reclaim_tx(&script, &user, outpoint, &txout, p2tr_single(&user), rate)
            .unwrap();
    use cohort_common::chain::Chain;
    w.ledger.broadcast(&tx).unwrap();
    w.ledger.mine(1);
    let mut body = body;
    body.deposits[0].deposit_csv = csv;
    // It would also be expiring; the spent check comes first.
    assert_eq!(submit_signed(&mut w, 40, &body, &user), Err(RefusalReason::Spent(outpoint)));

    // Unconfirmed: paid by a transaction still in the mempool.
    let user = Keypair::from_rng(&mut w.rng);
    let script = DepositScript::new(user.public, w.coordinator.public, 14_400).unwrap();
    let funding = Keypair::from_rng(&mut w.rng);
    let fee_out = w.ledger.faucet(&p2tr_single(&funding), Amount::from_sat(200_000)).unwrap();
    let mut pay = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn { previous_output: fee_out, ..Default::default() }],
        output: vec![bitcoin::TxOut {
            value: Amount::from_sat(150_000),
            script_pubkey: script.script_pubkey(),
        }],
    };
    let prev =
        [bitcoin::TxOut { value: Amount::from_sat(200_000), script_pubkey: p2tr_single(&funding) }];
    let sighash = cohort_common::scripts::key_spend_sighash(&pay, 0, &prev).unwrap();
    let tweaked = {
        use bitcoin::key::TapTweak;
        bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &funding.secret)
            .tap_tweak(SECP256K1, None)
    };
    let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash), &tweaked.to_keypair());
    pay.input[0].witness = cohort_common::scripts::key_spend_witness(&sig);
    // (The faucet mines a block: fund the template registration before broadcasting.)
    let (mut body, _, _) = registration(&mut w, 100_000, 14_400);
    let txid = w.ledger.broadcast(&pay).unwrap();
    body.deposits[0].outpoint = OutPoint { txid, vout: 0 };
    body.deposits[0].user_key = user.public;
    let r = submit_signed(&mut w, 41, &body, &user);
    assert_eq!(r, Err(RefusalReason::Unconfirmed(OutPoint { txid, vout: 0 })));
}

/// A withdrawal of `outpoint` (owned by `user`, its address with `csv`) paying `pay` sat to
/// a fresh key, with the user's nonce secret kept to sign later.
fn withdrawal(
    w: &mut World,
    outpoint: OutPoint,
    user: &Keypair,
    csv: u16,
    pay: u64,
) -> (Withdraw, musig2::SecNonce) {
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: outpoint,
            sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: Amount::from_sat(pay),
            script_pubkey: p2tr_single(&Keypair::from_rng(&mut w.rng)),
        }],
    };
    let secnonce = new_secnonce(&user.point, None, None);
    let input = WithdrawInput {
        outpoint,
        user_key: user.public,
        deposit_csv: csv,
        nonce: secnonce.public_nonce(),
    };
    (sign_withdrawal(WithdrawBody { tx, inputs: vec![input] }, user), secnonce)
}

fn sign_withdrawal(body: WithdrawBody, user: &Keypair) -> Withdraw {
    let msg = Message::from_digest(body.ownership_message().unwrap());
    let kp = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &user.secret);
    Withdraw { ownership_sigs: vec![SECP256K1.sign_schnorr(&msg, &kp)], body }
}

/// What the engine answers, with the chain data a driver looks up.
fn ask(
    w: &mut World,
    request: &Withdraw,
) -> Result<cohort_coordinator::engine::Cosigned, RefusalReason> {
    let max = w.engine.max_deposits_per_registration();
    let lookups = withdraw_lookup(&w.ledger, request, max).map_err(ChainOutage::from);
    w.engine.withdraw(request, lookups)
}

#[test]
fn a_withdrawal_is_cosigned_after_its_checks_and_its_deposit_joins_no_round() {
    let mut w = world();
    // A deposit in the running round cannot be withdrawn.
    let (body, user, registered) = registration(&mut w, 100_000, 14_400);
    submit_signed(&mut w, 40, &body, &user).unwrap();
    let (request, _) = withdrawal(&mut w, registered, &user, 14_400, 90_000);
    assert_eq!(ask(&mut w, &request), Err(RefusalReason::InRound(registered)));

    let (_, user, outpoint) = registration(&mut w, 100_000, 14_400);
    let (request, secnonce) = withdrawal(&mut w, outpoint, &user, 14_400, 99_000);

    // Refused, each for its reason: another key's signature, more paid out than the
    // deposit holds, an input already signed, a deposit the chain does not know, another
    // timeout than the address's.
    let stranger = Keypair::from_rng(&mut w.rng);
    let forged = sign_withdrawal(request.body.clone(), &stranger);
    assert_eq!(ask(&mut w, &forged), Err(RefusalReason::BadOwnershipSignature { deposit: 0 }));
    let changed = |w: &mut World, f: &dyn Fn(&mut WithdrawBody)| {
        let mut body = request.body.clone();
        f(&mut body);
        let request = sign_withdrawal(body, &user);
        ask(w, &request)
    };
    let r = changed(&mut w, &|b| b.tx.output[0].value = Amount::from_sat(100_001));
    assert!(matches!(r, Err(RefusalReason::BadWithdrawal(_))), "{r:?}");
    let r = changed(&mut w, &|b| b.tx.input[0].witness.push([1u8; 64]));
    assert!(matches!(r, Err(RefusalReason::BadWithdrawal(_))), "{r:?}");
    let r = changed(&mut w, &|b| b.tx.version = bitcoin::transaction::Version(3));
    assert!(matches!(r, Err(RefusalReason::BadWithdrawal(_))), "{r:?}");
    let unknown = OutPoint {
        txid: bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::from_byte_array([0x42; 32])),
        vout: 0,
    };
    let r = changed(&mut w, &|b| {
        b.tx.input[0].previous_output = unknown;
        b.inputs[0].outpoint = unknown;
    });
    assert_eq!(r, Err(RefusalReason::UnknownDeposit(unknown)));
    let r = changed(&mut w, &|b| b.inputs[0].deposit_csv = 14_399);
    assert_eq!(r, Err(RefusalReason::NotDepositAddress(outpoint)));
    assert!(!w.engine.is_withdrawing(&outpoint), "nothing refused is recorded");

    // The good one: the coordinator's half completes a signature Bitcoin Core accepts.
    let cosigned = ask(&mut w, &request).unwrap();
    assert!(w.engine.is_withdrawing(&outpoint));
    let tx = &request.body.tx;
    assert_eq!(cosigned.answer.txid, tx.compute_txid());
    let prevouts: Vec<_> = cosigned.deposits.iter().map(|(_, o)| o.clone()).collect();
    let script = DepositScript::new(user.public, w.coordinator.public, 14_400).unwrap();
    let ctx = script.signing_context().unwrap();
    let sighash = cohort_common::scripts::key_spend_sighash(tx, 0, &prevouts).unwrap();
    let (theirs, their_psig) = (cosigned.answer.nonces[0].clone(), cosigned.answer.partials[0]);
    let ours = secnonce.public_nonce();
    let agg = musig::nonce_agg(&[ours.clone(), theirs.clone()]).unwrap();
    let psig = musig::sign_partial(&ctx, &user, secnonce, &agg, &sighash).unwrap();
    let sig = musig::combine(
        &ctx,
        &agg,
        &sighash,
        &[
            Contribution { signer: user.point, pubnonce: ours, psig },
            Contribution { signer: w.coordinator.point, pubnonce: theirs, psig: their_psig },
        ],
    )
    .unwrap();
    let mut signed = tx.clone();
    signed.input[0].witness = cohort_common::scripts::key_spend_witness(&sig);
    assert_eq!(w.ledger.broadcast(&signed).unwrap(), tx.compute_txid());

    // Spent in the mempool by its withdrawal, the deposit can be co-signed again (a
    // replacement at a higher fee), from the output recorded the first time.
    let (bump, _) = withdrawal(&mut w, outpoint, &user, 14_400, 98_000);
    assert!(ask(&mut w, &bump).is_ok());

    // It joins no round again, on this engine or on one restored from the record.
    let (mut body, _, _) = registration(&mut w, 100_000, 14_400);
    body.deposits[0].outpoint = outpoint;
    body.deposits[0].user_key = user.public;
    let r = submit_signed(&mut w, 41, &body, &user);
    assert_eq!(r, Err(RefusalReason::Withdrawing(outpoint)));
    let mut restored = world();
    restored.engine.restore_withdrawal(cosigned.deposits.clone());
    assert!(restored.engine.is_withdrawing(&outpoint));
}
