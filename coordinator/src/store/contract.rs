//! The contract every coordinator store backend passes: each check runs on a fresh store
//! from `make`, and `populate`/`assert_populated` let a backend check a reopen.

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};

use super::{
    BanRecord, BatchRecord, BatchStatus, CoordinatorStore, RegistrationRecord, RegistrationStatus,
    RoundRecord, RoundState, StoreError, WithdrawalRecord, MAX_STORED_INT,
};

/// Runs every check, each on its own fresh store.
pub(crate) fn run_all<S: CoordinatorStore>(make: impl Fn() -> S) {
    rounds_round_trip(&make());
    registrations_round_trip(&make());
    registrations_from_many_threads(&make());
    batches_and_unfinished(&make());
    signed_trees(&make());
    bans_expire_and_only_grow(&make());
    out_of_range_integers_refused(&make());
    withdrawals_round_trip(&make());
    let store = make();
    populate(&store);
    assert_populated(&store);
}

pub(crate) fn txid(tag: u8) -> Txid {
    Txid::from_byte_array([tag; 32])
}

fn op(tag: u8, vout: u32) -> OutPoint {
    OutPoint { txid: txid(tag), vout }
}

/// A small but real transaction: one witness input, a P2TR output and a P2A anchor.
pub(crate) fn sample_tx(tag: u8) -> Transaction {
    let mut p2tr = vec![0x51, 0x20];
    p2tr.extend_from_slice(&[tag; 32]);
    Transaction {
        version: Version(3),
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: op(tag, u32::from(tag)),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::from_height(144),
            witness: Witness::from_slice(&[vec![tag; 64]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(10_000 + u64::from(tag)),
                script_pubkey: ScriptBuf::from_bytes(p2tr),
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]),
            },
        ],
    }
}

fn round(n: u64) -> RoundRecord {
    RoundRecord {
        round: n,
        params: vec![n as u8; 3],
        started_at_ms: n.saturating_mul(1_000),
        state: RoundState::Registering,
    }
}

fn registration(round: u64, id: u64, deposits: Vec<OutPoint>) -> RegistrationRecord {
    RegistrationRecord {
        round,
        registration: id,
        body: format!("registration {id}").into_bytes(),
        deposits,
        status: RegistrationStatus::Accepted,
    }
}

fn batch(round: u64, batch: u32, attempt: u32) -> BatchRecord {
    BatchRecord {
        round,
        batch,
        attempt,
        funding_tx: sample_tx(batch as u8 * 10 + attempt as u8),
        status: BatchStatus::Signing,
    }
}

fn tree(tag: u8, n: u8) -> Vec<Transaction> {
    (0..n).map(|i| sample_tx(tag.wrapping_add(i))).collect()
}

fn assert_same_txs(a: &[Transaction], b: &[Transaction]) {
    assert_eq!(a, b);
    assert_eq!(
        a.iter().map(serialize).collect::<Vec<_>>(),
        b.iter().map(serialize).collect::<Vec<_>>()
    );
}

fn rounds_round_trip(s: &impl CoordinatorStore) {
    assert_eq!(s.latest_round().unwrap(), None);
    assert_eq!(s.recent_rounds(5).unwrap(), vec![]);
    for n in [3, 1, 2] {
        s.put_round(&round(n)).unwrap();
    }
    assert_eq!(s.round(2).unwrap(), Some(round(2)));
    assert_eq!(s.round(4).unwrap(), None);
    assert_eq!(s.recent_rounds(2).unwrap(), vec![round(3), round(2)]);
    assert_eq!(s.recent_rounds(0).unwrap(), vec![]);
    assert_eq!(s.recent_rounds(usize::MAX).unwrap().len(), 3);
    assert_eq!(s.latest_round().unwrap(), Some(round(3)));

    for state in [RoundState::Signing, RoundState::Finished, RoundState::Aborted] {
        s.set_round_state(1, state).unwrap();
        assert_eq!(s.round(1).unwrap().unwrap().state, state);
    }
    assert!(matches!(s.set_round_state(9, RoundState::Finished), Err(StoreError::NotFound { .. })));

    // Replacing a round keeps what hangs off it.
    s.put_registration(&registration(2, 1, vec![op(1, 0)])).unwrap();
    let mut replaced = round(2);
    replaced.params = vec![9, 9];
    s.put_round(&replaced).unwrap();
    assert_eq!(s.round(2).unwrap(), Some(replaced));
    assert_eq!(s.registrations_of_round(2).unwrap().len(), 1);
}

fn registrations_round_trip(s: &impl CoordinatorStore) {
    let orphan = registration(5, 1, vec![]);
    assert!(matches!(s.put_registration(&orphan), Err(StoreError::NotFound { .. })));
    s.put_round(&round(5)).unwrap();
    s.put_round(&round(6)).unwrap();

    // Deposits keep the order given.
    let a = registration(5, 2, vec![op(9, 1), op(1, 0), op(5, 3)]);
    let b = registration(5, 1, vec![]);
    let c = registration(6, 1, vec![op(2, 2)]);
    for r in [&a, &b, &c] {
        s.put_registration(r).unwrap();
    }
    assert_eq!(s.registration(5, 2).unwrap(), Some(a.clone()));
    assert_eq!(s.registration(5, 3).unwrap(), None);
    assert_eq!(s.registrations_of_round(5).unwrap(), vec![b, a.clone()]);
    assert_eq!(s.registrations_of_round(6).unwrap(), vec![c]);
    assert_eq!(s.registrations_of_round(7).unwrap(), vec![]);

    for status in [
        RegistrationStatus::InBatch(4),
        RegistrationStatus::Excluded,
        RegistrationStatus::Cancelled,
        RegistrationStatus::Completed,
        RegistrationStatus::Accepted,
    ] {
        s.set_registration_status(5, 2, status).unwrap();
        assert_eq!(s.registration(5, 2).unwrap().unwrap().status, status);
    }
    assert!(matches!(
        s.set_registration_status(5, 9, RegistrationStatus::Excluded),
        Err(StoreError::NotFound { .. })
    ));

    // Counted per status, batches apart, without the other rounds.
    let counts = |round| {
        let mut c = s.registration_counts(round).unwrap();
        c.sort_by_key(|(status, _)| format!("{status:?}"));
        c
    };
    assert_eq!(counts(5), vec![(RegistrationStatus::Accepted, 2)]);
    s.set_registration_status(5, 2, RegistrationStatus::InBatch(4)).unwrap();
    s.set_registration_status(5, 1, RegistrationStatus::InBatch(3)).unwrap();
    assert_eq!(
        counts(5),
        vec![(RegistrationStatus::InBatch(3), 1), (RegistrationStatus::InBatch(4), 1)]
    );
    s.set_registration_status(5, 1, RegistrationStatus::InBatch(4)).unwrap();
    assert_eq!(counts(5), vec![(RegistrationStatus::InBatch(4), 2)]);
    assert_eq!(counts(6), vec![(RegistrationStatus::Accepted, 1)]);
    assert_eq!(counts(7), vec![]);
    s.set_registration_status(5, 1, RegistrationStatus::Accepted).unwrap();
    s.set_registration_status(5, 2, RegistrationStatus::Accepted).unwrap();

    // Replacing replaces the deposits too.
    let mut fewer = a;
    fewer.deposits = vec![op(7, 7)];
    fewer.body = b"changed".to_vec();
    s.put_registration(&fewer).unwrap();
    assert_eq!(s.registration(5, 2).unwrap(), Some(fewer));
}

fn registrations_from_many_threads(s: &impl CoordinatorStore) {
    s.put_round(&round(1)).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            scope.spawn(move || {
                for i in 0..10 {
                    let id = t * 10 + i;
                    s.put_registration(&registration(1, id, vec![op(id as u8, 0)])).unwrap();
                }
            });
        }
    });
    let ids: Vec<u64> =
        s.registrations_of_round(1).unwrap().iter().map(|r| r.registration).collect();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
}

fn batches_and_unfinished(s: &impl CoordinatorStore) {
    assert!(matches!(s.put_batch(&batch(1, 0, 0)), Err(StoreError::NotFound { .. })));
    s.put_round(&round(1)).unwrap();
    s.put_round(&round(2)).unwrap();
    let (b100, b110, b200) = (batch(1, 0, 0), batch(1, 1, 0), batch(2, 0, 0));
    for b in [&b200, &b110, &b100] {
        s.put_batch(b).unwrap();
    }
    assert_eq!(s.batches_of_round(1).unwrap(), vec![b100.clone(), b110.clone()]);
    assert_eq!(
        serialize(&s.batches_of_round(2).unwrap()[0].funding_tx),
        serialize(&b200.funding_tx)
    );
    assert_eq!(s.unfinished_batches().unwrap(), vec![b100.clone(), b110.clone(), b200.clone()]);

    let aborted = BatchStatus::Aborted { reason: "participant 3 sent no nonce".into() };
    s.set_batch_status(1, 0, 0, &aborted).unwrap();
    let retry = batch(1, 0, 1);
    s.put_batch(&retry).unwrap();
    s.set_batch_status(1, 0, 1, &BatchStatus::TreeSigned).unwrap();
    s.set_batch_status(1, 1, 0, &BatchStatus::Finalized { txid: txid(77) }).unwrap();
    s.set_batch_status(2, 0, 0, &BatchStatus::Confirmed { height: 812_345 }).unwrap();
    let mut retry_signed = retry.clone();
    retry_signed.status = BatchStatus::TreeSigned;
    let mut finalized = b110.clone();
    finalized.status = BatchStatus::Finalized { txid: txid(77) };
    // A finalized attempt stays on the list until it confirms.
    assert_eq!(s.unfinished_batches().unwrap(), vec![retry_signed.clone(), finalized.clone()]);
    s.set_batch_status(1, 1, 0, &BatchStatus::Confirmed { height: 812_346 }).unwrap();
    assert_eq!(s.unfinished_batches().unwrap(), vec![retry_signed.clone()]);
    s.set_batch_status(1, 1, 0, &BatchStatus::Finalized { txid: txid(77) }).unwrap();

    let round1 = s.batches_of_round(1).unwrap();
    assert_eq!(
        round1.iter().map(|b| b.status.clone()).collect::<Vec<_>>(),
        vec![aborted, BatchStatus::TreeSigned, BatchStatus::Finalized { txid: txid(77) },]
    );

    // A status that is not finished puts the attempt back on the list; put_batch replaces.
    s.set_batch_status(2, 0, 0, &BatchStatus::Signing).unwrap();
    let mut changed = b200;
    changed.funding_tx = sample_tx(99);
    s.put_batch(&changed).unwrap();
    assert_eq!(s.unfinished_batches().unwrap(), vec![retry_signed, finalized, changed]);

    assert!(matches!(
        s.set_batch_status(1, 0, 2, &BatchStatus::Signing),
        Err(StoreError::NotFound { .. })
    ));
}

fn signed_trees(s: &impl CoordinatorStore) {
    s.put_round(&round(4)).unwrap();
    assert!(matches!(s.put_signed_tree(4, 0, 0, &tree(1, 3)), Err(StoreError::NotFound { .. })));
    s.put_batch(&batch(4, 0, 0)).unwrap();
    s.put_batch(&batch(4, 0, 1)).unwrap();
    s.put_batch(&batch(4, 1, 0)).unwrap();
    assert_eq!(s.signed_tree(4, 0).unwrap(), None);

    s.put_signed_tree(4, 0, 0, &tree(1, 3)).unwrap();
    assert_same_txs(&s.signed_tree(4, 0).unwrap().unwrap(), &tree(1, 3));
    assert_eq!(s.signed_tree(4, 1).unwrap(), None);

    // The highest attempt with a tree wins; storing again replaces.
    s.put_signed_tree(4, 0, 1, &tree(50, 5)).unwrap();
    assert_same_txs(&s.signed_tree(4, 0).unwrap().unwrap(), &tree(50, 5));
    s.put_signed_tree(4, 0, 1, &tree(60, 2)).unwrap();
    assert_same_txs(&s.signed_tree(4, 0).unwrap().unwrap(), &tree(60, 2));

    // Replacing the batch record keeps its tree; an empty tree is a tree.
    s.put_batch(&batch(4, 0, 1)).unwrap();
    assert_same_txs(&s.signed_tree(4, 0).unwrap().unwrap(), &tree(60, 2));
    s.put_signed_tree(4, 1, 0, &[]).unwrap();
    assert_eq!(s.signed_tree(4, 1).unwrap(), Some(vec![]));
}

fn ban_record(tag: u8, until_ms: u64, offences: u32, reason: &str) -> BanRecord {
    BanRecord { outpoint: op(tag, 0), until_ms, offences, reason: reason.into() }
}

fn bans_expire_and_only_grow(s: &impl CoordinatorStore) {
    assert!(!s.is_banned(&op(1, 0), 0).unwrap());
    s.ban(&op(2, 0), 1_000, 1, "no nonce").unwrap();
    s.ban(&op(1, 0), 2_000, 1, "bad signature").unwrap();
    assert!(s.is_banned(&op(2, 0), 999).unwrap());
    assert!(!s.is_banned(&op(2, 0), 1_000).unwrap());
    assert!(!s.is_banned(&op(2, 1), 500).unwrap());
    assert_eq!(
        s.bans(500).unwrap(),
        vec![ban_record(1, 2_000, 1, "bad signature"), ban_record(2, 1_000, 1, "no nonce"),]
    );
    assert_eq!(s.bans(1_500).unwrap(), vec![ban_record(1, 2_000, 1, "bad signature")]);

    // A shorter ban does not shorten; a longer one extends and says why.
    // Offence counts only grow, whichever ban is longer.
    s.ban(&op(1, 0), 1_200, 3, "late").unwrap();
    assert!(s.is_banned(&op(1, 0), 1_900).unwrap());
    assert_eq!(s.bans(1_500).unwrap(), vec![ban_record(1, 2_000, 3, "bad signature")]);
    s.ban(&op(2, 0), 3_000, 2, "again").unwrap();
    assert_eq!(s.bans(2_500).unwrap(), vec![ban_record(2, 3_000, 2, "again")]);
    s.ban(&op(2, 0), 3_000, 1, "stale").unwrap();
    assert_eq!(s.bans(2_500).unwrap(), vec![ban_record(2, 3_000, 2, "again")]);

    // An operator lifts a ban: it ends now, the offence count stays.
    s.ban(&op(3, 0), 9_000, 4, "bad signature").unwrap();
    assert!(s.lift_ban(&op(3, 0), 2_500, "lifted by the operator").unwrap());
    assert!(!s.is_banned(&op(3, 0), 2_500).unwrap());
    assert!(!s.lift_ban(&op(3, 0), 2_600, "again").unwrap());
    assert!(!s.lift_ban(&op(4, 0), 2_600, "never banned").unwrap());
    assert!(s.bans(0).unwrap().contains(&ban_record(3, 2_500, 4, "lifted by the operator")));
    s.ban(&op(3, 0), 2_000, 1, "stale").unwrap();
    assert!(!s.is_banned(&op(3, 0), 2_500).unwrap());

    assert_eq!(s.purge_expired_bans(2_500).unwrap(), 2);
    assert_eq!(s.purge_expired_bans(2_500).unwrap(), 0);
    assert_eq!(s.bans(0).unwrap(), vec![ban_record(2, 3_000, 2, "again")]);
}

fn out_of_range_integers_refused(s: &impl CoordinatorStore) {
    let too_big = MAX_STORED_INT + 1;
    assert!(matches!(
        s.put_round(&round(too_big)),
        Err(StoreError::OutOfRange { value, .. }) if value == too_big
    ));
    let mut late = round(1);
    late.started_at_ms = u64::MAX;
    assert!(matches!(s.put_round(&late), Err(StoreError::OutOfRange { .. })));
    assert_eq!(s.latest_round().unwrap(), None);
    assert!(matches!(s.round(u64::MAX), Err(StoreError::OutOfRange { .. })));
    assert!(matches!(s.ban(&op(1, 0), u64::MAX, 1, "forever"), Err(StoreError::OutOfRange { .. })));
    assert!(matches!(s.is_banned(&op(1, 0), u64::MAX), Err(StoreError::OutOfRange { .. })));
    s.put_round(&round(1)).unwrap();
    assert!(matches!(
        s.put_registration(&registration(1, u64::MAX, vec![])),
        Err(StoreError::OutOfRange { .. })
    ));
    assert_eq!(s.registrations_of_round(1).unwrap(), vec![]);
}

/// Writes one of everything; [`assert_populated`] finds it again (also after a reopen).
pub(crate) fn populate(s: &impl CoordinatorStore) {
    s.put_round(&round(8)).unwrap();
    s.set_round_state(8, RoundState::Signing).unwrap();
    s.put_registration(&registration(8, 1, vec![op(3, 1), op(4, 0)])).unwrap();
    s.set_registration_status(8, 1, RegistrationStatus::InBatch(0)).unwrap();
    s.put_batch(&batch(8, 0, 0)).unwrap();
    s.put_signed_tree(8, 0, 0, &tree(30, 4)).unwrap();
    s.set_batch_status(8, 0, 0, &BatchStatus::TreeSigned).unwrap();
    s.ban(&op(5, 5), 10_000, 4, "equivocated").unwrap();
}

/// Checks what [`populate`] wrote.
pub(crate) fn assert_populated(s: &impl CoordinatorStore) {
    let mut r = round(8);
    r.state = RoundState::Signing;
    assert_eq!(s.latest_round().unwrap(), Some(r));
    let mut reg = registration(8, 1, vec![op(3, 1), op(4, 0)]);
    reg.status = RegistrationStatus::InBatch(0);
    assert_eq!(s.registrations_of_round(8).unwrap(), vec![reg]);
    let mut b = batch(8, 0, 0);
    b.status = BatchStatus::TreeSigned;
    assert_eq!(s.unfinished_batches().unwrap(), vec![b]);
    assert_same_txs(&s.signed_tree(8, 0).unwrap().unwrap(), &tree(30, 4));
    assert!(s.is_banned(&op(5, 5), 9_999).unwrap());
    assert_eq!(
        s.bans(0).unwrap(),
        vec![BanRecord {
            outpoint: op(5, 5),
            until_ms: 10_000,
            offences: 4,
            reason: "equivocated".into()
        }]
    );
}

fn withdrawals_round_trip(s: &impl CoordinatorStore) {
    assert!(s.withdrawals().unwrap().is_empty());
    let record = |tag: u8, at_ms| WithdrawalRecord {
        tx: sample_tx(tag),
        prevouts: vec![sample_tx(tag).output[0].clone()],
        at_ms,
    };
    let (first, second) = (record(5, 2_000), record(6, 1_000));
    s.put_withdrawal(&first).unwrap();
    s.put_withdrawal(&second).unwrap();
    // The same transaction again replaces its record.
    s.put_withdrawal(&first).unwrap();
    assert_eq!(s.withdrawals().unwrap(), vec![second.clone(), first.clone()]);
    let deposits: Vec<_> = first.deposits().collect();
    assert_eq!(deposits, vec![(op(5, 5), first.prevouts[0].clone())]);
    // Prevouts that do not match the inputs are refused, and nothing is written.
    let mut broken = record(7, 3_000);
    broken.prevouts.clear();
    assert!(matches!(s.put_withdrawal(&broken), Err(StoreError::Invalid(_))));
    assert_eq!(s.withdrawals().unwrap().len(), 2);
}
