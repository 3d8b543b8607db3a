//! The contract every participant store backend passes: each check runs on a fresh store
//! from `make`, and `populate`/`assert_populated` let a backend check a reopen.

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};

use super::{
    DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent, ParticipantStore,
    StoreError, WithdrawalRecord, MAX_STORED_INT,
};

/// Runs every check, each on its own fresh store.
pub(crate) fn run_all<S: ParticipantStore>(make: impl Fn() -> S) {
    seed_is_set_once(&make());
    key_index_increases(&make());
    key_index_is_atomic(&make());
    deposits_round_trip(&make());
    deposit_statuses_round_trip(&make());
    exit_paths_round_trip(&make());
    exit_paths_stored_all_or_nothing(&make());
    exited_marks(&make());
    history_is_newest_first_and_bounded(&make());
    out_of_range_integers_refused(&make());
    settings_round_trip(&make());
    withdrawals_round_trip(&make());
    exit_children_round_trip(&make());
    let store = make();
    populate(&store);
    assert_populated(&store);
}

pub(crate) fn txid(tag: u8) -> Txid {
    Txid::from_byte_array([tag; 32])
}

fn p2tr_script(tag: u8) -> ScriptBuf {
    let mut bytes = vec![0x51, 0x20];
    bytes.extend_from_slice(&[tag; 32]);
    ScriptBuf::from_bytes(bytes)
}

/// A small but real transaction: one witness input, a P2TR output and a P2A anchor.
pub(crate) fn sample_tx(tag: u8) -> Transaction {
    Transaction {
        version: Version(3),
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: txid(tag), vout: u32::from(tag) },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::from_height(144),
            witness: Witness::from_slice(&[vec![tag; 64]]),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(10_000 + u64::from(tag)),
                script_pubkey: p2tr_script(tag),
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]),
            },
        ],
    }
}

fn deposit(tag: u8, vout: u32) -> DepositRecord {
    DepositRecord {
        outpoint: OutPoint { txid: txid(tag), vout },
        txout: TxOut { value: Amount::from_sat(50_000), script_pubkey: p2tr_script(tag) },
        key_index: u32::from(tag),
        deposit_csv: 14_400,
        status: DepositStatus::Unspent,
    }
}

fn exit_path(funding: u8, leaf: u32, depth: u8) -> ExitPathRecord {
    ExitPathRecord {
        funding_txid: txid(funding),
        round: 7,
        batch: 1,
        leaf,
        leaf_output: TxOut { value: Amount::from_sat(20_000), script_pubkey: p2tr_script(9) },
        node: 5 + leaf,
        vout: leaf % 4,
        path: (0..depth).map(|i| sample_tx(funding.wrapping_add(i))).collect(),
        leaf_key_index: if leaf.is_multiple_of(2) { Some(leaf) } else { None },
        exit_csv: if leaf.is_multiple_of(2) { Some(144) } else { None },
    }
}

fn event(at_ms: u64) -> HistoryEvent {
    HistoryEvent {
        at_ms,
        round: if at_ms.is_multiple_of(2) { Some(at_ms / 2) } else { None },
        kind: "registered".into(),
        detail: format!("event at {at_ms}"),
    }
}

fn seed_is_set_once(s: &impl ParticipantStore) {
    assert_eq!(s.seed().unwrap(), None);
    s.init_seed([7; 32]).unwrap();
    assert_eq!(s.seed().unwrap(), Some([7; 32]));
    assert!(matches!(s.init_seed([8; 32]), Err(StoreError::SeedExists)));
    assert!(matches!(s.init_seed([7; 32]), Err(StoreError::SeedExists)));
    assert_eq!(s.seed().unwrap(), Some([7; 32]));
}

fn key_index_increases(s: &impl ParticipantStore) {
    let got: Vec<u32> = (0..5).map(|_| s.next_key_index().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

fn key_index_is_atomic(s: &impl ParticipantStore) {
    let mut all: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| (0..10).map(|_| s.next_key_index().unwrap()).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

fn deposits_round_trip(s: &impl ParticipantStore) {
    let (a, b, c) = (deposit(3, 1), deposit(3, 0), deposit(1, 9));
    for d in [&a, &b, &c] {
        s.put_deposit(d).unwrap();
    }
    assert_eq!(s.deposits().unwrap(), vec![c.clone(), b.clone(), a.clone()]);
    assert_eq!(s.deposit(&a.outpoint).unwrap(), Some(a.clone()));
    assert_eq!(s.deposit(&OutPoint { txid: txid(3), vout: 2 }).unwrap(), None);

    let mut replaced = a.clone();
    replaced.key_index = 99;
    replaced.status = DepositStatus::Spent;
    s.put_deposit(&replaced).unwrap();
    assert_eq!(s.deposit(&a.outpoint).unwrap(), Some(replaced));
    assert_eq!(s.deposits().unwrap().len(), 3);
}

fn deposit_statuses_round_trip(s: &impl ParticipantStore) {
    let d = deposit(2, 0);
    s.put_deposit(&d).unwrap();
    for status in [
        DepositStatus::Registered { round: 12 },
        DepositStatus::InBatch { funding_txids: vec![txid(40)] },
        DepositStatus::InBatch { funding_txids: vec![txid(40), txid(42), txid(43)] },
        DepositStatus::Batched { funding_txid: txid(42) },
        DepositStatus::Reclaimed { txid: txid(41) },
        DepositStatus::Withdrawing { txids: vec![txid(44)] },
        DepositStatus::Withdrawing { txids: vec![txid(44), txid(45)] },
        DepositStatus::Withdrawn { txid: txid(45) },
        DepositStatus::Spent,
        DepositStatus::Unspent,
    ] {
        s.set_deposit_status(&d.outpoint, &status).unwrap();
        assert_eq!(s.deposit(&d.outpoint).unwrap().unwrap().status, status);
    }
    assert!(matches!(
        s.set_deposit_status(&d.outpoint, &DepositStatus::InBatch { funding_txids: vec![] }),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_deposit_status(&d.outpoint, &DepositStatus::Withdrawing { txids: vec![] }),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.deposit(&d.outpoint).unwrap().unwrap().status, DepositStatus::Unspent);
    let missing = OutPoint { txid: txid(2), vout: 1 };
    assert!(matches!(
        s.set_deposit_status(&missing, &DepositStatus::Spent),
        Err(StoreError::NotFound { .. })
    ));
}

fn exit_paths_round_trip(s: &impl ParticipantStore) {
    s.store_exit_paths(&[]).unwrap();
    let batch: Vec<_> = (0..3).map(|leaf| exit_path(20, leaf, 3)).collect();
    s.store_exit_paths(&batch).unwrap();
    let other = exit_path(10, 0, 2);
    s.store_exit_paths(std::slice::from_ref(&other)).unwrap();

    let got = s.exit_path(&txid(20), 1).unwrap().unwrap();
    assert_eq!(got, batch[1]);
    for (stored, original) in got.path.iter().zip(&batch[1].path) {
        assert_eq!(serialize(stored), serialize(original));
    }
    assert_eq!(s.exit_path(&txid(20), 3).unwrap(), None);
    assert_eq!(s.exit_path(&txid(21), 0).unwrap(), None);

    // Ordered by funding txid bytes, then leaf.
    let mut expected = vec![other];
    expected.extend(batch.iter().cloned());
    assert_eq!(s.exit_paths().unwrap(), expected);

    // Storing again replaces.
    let mut changed = batch[0].clone();
    changed.path.truncate(1);
    s.store_exit_paths(std::slice::from_ref(&changed)).unwrap();
    assert_eq!(s.exit_path(&txid(20), 0).unwrap(), Some(changed));
    assert_eq!(s.exit_paths().unwrap().len(), 4);
}

fn exit_paths_stored_all_or_nothing(s: &impl ParticipantStore) {
    let good = exit_path(30, 0, 2);
    let mut bad = exit_path(30, 1, 2);
    bad.round = MAX_STORED_INT + 1;
    assert!(matches!(
        s.store_exit_paths(&[good, bad]),
        Err(StoreError::OutOfRange { value, .. }) if value == MAX_STORED_INT + 1
    ));
    assert_eq!(s.exit_paths().unwrap(), vec![]);
}

fn exited_marks(s: &impl ParticipantStore) {
    let batch: Vec<_> = (0..3).map(|leaf| exit_path(50, leaf, 2)).collect();
    s.store_exit_paths(&batch).unwrap();
    assert!(!s.is_exited(&txid(50), 1).unwrap());
    s.mark_exited(&txid(50), 1).unwrap();
    assert!(s.is_exited(&txid(50), 1).unwrap());
    assert!(!s.is_exited(&txid(50), 0).unwrap());
    assert_eq!(s.pending_exit_paths().unwrap(), vec![batch[0].clone(), batch[2].clone()]);
    assert_eq!(s.exit_paths().unwrap(), batch);

    // Storing the batch again keeps the mark.
    s.store_exit_paths(&batch).unwrap();
    assert!(s.is_exited(&txid(50), 1).unwrap());

    assert!(matches!(s.mark_exited(&txid(50), 3), Err(StoreError::NotFound { .. })));
    assert!(matches!(s.is_exited(&txid(51), 0), Err(StoreError::NotFound { .. })));
}

fn history_is_newest_first_and_bounded(s: &impl ParticipantStore) {
    assert_eq!(s.history(10).unwrap(), vec![]);
    for at in 1..=5 {
        s.append_history(&event(at)).unwrap();
    }
    assert_eq!(s.history(2).unwrap(), vec![event(5), event(4)]);
    assert_eq!(s.history(0).unwrap(), vec![]);
    assert_eq!(s.history(usize::MAX).unwrap(), (1..=5).rev().map(event).collect::<Vec<_>>());
}

fn out_of_range_integers_refused(s: &impl ParticipantStore) {
    let mut d = deposit(4, 0);
    d.txout.value = Amount::from_sat(MAX_STORED_INT + 1);
    assert!(matches!(s.put_deposit(&d), Err(StoreError::OutOfRange { .. })));
    assert_eq!(s.deposits().unwrap(), vec![]);
    let mut e = event(1);
    e.round = Some(u64::MAX);
    assert!(matches!(s.append_history(&e), Err(StoreError::OutOfRange { .. })));
    assert_eq!(s.history(10).unwrap(), vec![]);
    let mut d = deposit(4, 0);
    s.put_deposit(&d).unwrap();
    d.status = DepositStatus::Registered { round: u64::MAX };
    assert!(matches!(
        s.set_deposit_status(&d.outpoint, &d.status),
        Err(StoreError::OutOfRange { .. })
    ));
    assert_eq!(s.deposit(&d.outpoint).unwrap().unwrap().status, DepositStatus::Unspent);
}

fn settings_round_trip(s: &impl ParticipantStore) {
    assert_eq!(s.setting("coordinator").unwrap(), None);
    s.set_setting("coordinator", "{\"uri\":1}").unwrap();
    s.set_setting("other", "").unwrap();
    assert_eq!(s.setting("coordinator").unwrap().as_deref(), Some("{\"uri\":1}"));
    s.set_setting("coordinator", "replaced").unwrap();
    assert_eq!(s.setting("coordinator").unwrap().as_deref(), Some("replaced"));
    assert_eq!(s.setting("other").unwrap().as_deref(), Some(""));
    assert_eq!(s.setting("Coordinator").unwrap(), None);
}

/// Writes one of everything; [`assert_populated`] finds it again (also after a reopen).
pub(crate) fn populate(s: &impl ParticipantStore) {
    s.init_seed([42; 32]).unwrap();
    assert_eq!(s.next_key_index().unwrap(), 0);
    assert_eq!(s.next_key_index().unwrap(), 1);
    let mut d = deposit(60, 2);
    d.status = DepositStatus::InBatch { funding_txids: vec![txid(61), txid(62)] };
    s.put_deposit(&d).unwrap();
    s.store_exit_paths(&[exit_path(61, 0, 3), exit_path(61, 1, 3)]).unwrap();
    s.mark_exited(&txid(61), 1).unwrap();
    s.append_history(&event(100)).unwrap();
    s.append_history(&event(101)).unwrap();
    s.set_setting("coordinator", "kept").unwrap();
}

/// Checks what [`populate`] wrote, then that the key counter continues past it.
pub(crate) fn assert_populated(s: &impl ParticipantStore) {
    assert_eq!(s.seed().unwrap(), Some([42; 32]));
    let mut d = deposit(60, 2);
    d.status = DepositStatus::InBatch { funding_txids: vec![txid(61), txid(62)] };
    assert_eq!(s.deposits().unwrap(), vec![d]);
    assert_eq!(s.exit_paths().unwrap(), vec![exit_path(61, 0, 3), exit_path(61, 1, 3)]);
    assert_eq!(s.pending_exit_paths().unwrap(), vec![exit_path(61, 0, 3)]);
    assert!(s.is_exited(&txid(61), 1).unwrap());
    assert_eq!(s.history(10).unwrap(), vec![event(101), event(100)]);
    assert_eq!(s.setting("coordinator").unwrap().as_deref(), Some("kept"));
    let next = s.next_key_index().unwrap();
    assert!(next >= 2, "key index {next} handed out again");
}

fn withdrawals_round_trip(s: &impl ParticipantStore) {
    assert!(s.withdrawals().unwrap().is_empty());
    let (first, second) = (
        WithdrawalRecord { tx: sample_tx(7), at_ms: 5_000 },
        WithdrawalRecord { tx: sample_tx(8), at_ms: 4_000 },
    );
    s.put_withdrawal(&first).unwrap();
    s.put_withdrawal(&second).unwrap();
    // The same transaction again keeps the first record; the order is the order stored.
    s.put_withdrawal(&WithdrawalRecord { at_ms: 9_000, ..first.clone() }).unwrap();
    assert_eq!(s.withdrawals().unwrap(), vec![first, second]);
    let huge = WithdrawalRecord { tx: sample_tx(9), at_ms: u64::MAX };
    assert!(s.put_withdrawal(&huge).is_err());
    assert_eq!(s.withdrawals().unwrap().len(), 2);
}

/// A CPFP child of `node` as the exit tool builds one, paying `fee` out of a 50,000-sat
/// fee input.
fn child_of(node: Txid, tag: u8, fee: u64) -> ExitChildRecord {
    let mut child = sample_tx(tag);
    child.input[0].previous_output = OutPoint { txid: node, vout: 1 };
    child.input.push(TxIn {
        previous_output: OutPoint { txid: txid(tag), vout: 0 },
        ..child.input[0].clone()
    });
    child.output.truncate(1);
    child.output[0].value = Amount::from_sat(50_000 - fee);
    ExitChildRecord {
        node_txid: node,
        child,
        fee_input_value: Amount::from_sat(50_000),
        height: 700 + u32::from(tag),
    }
}

fn exit_children_round_trip(s: &impl ParticipantStore) {
    let node = txid(90);
    assert_eq!(s.exit_child(&node).unwrap(), None);
    let first = child_of(node, 1, 300);
    s.put_exit_child(&first).unwrap();
    assert_eq!(s.exit_child(&node).unwrap(), Some(first.clone()));
    assert_eq!(first.fee(), Some(Amount::from_sat(300)));
    // A replacement takes the node's place; another node has its own.
    let second = child_of(node, 2, 900);
    s.put_exit_child(&second).unwrap();
    let other = child_of(txid(91), 3, 400);
    s.put_exit_child(&other).unwrap();
    assert_eq!(s.exit_child(&node).unwrap(), Some(second.clone()));
    assert_eq!(s.exit_child(&txid(91)).unwrap(), Some(other));
    // Not a child of its node, change above the input, out of range: refused, nothing kept.
    let mut stranger = child_of(node, 4, 100);
    stranger.child.input[0].previous_output.txid = txid(92);
    let mut overpaid = child_of(node, 5, 100);
    overpaid.fee_input_value = Amount::from_sat(10);
    let mut huge = child_of(node, 6, 100);
    huge.fee_input_value = Amount::from_sat(u64::MAX);
    for bad in [stranger, overpaid, huge] {
        assert!(s.put_exit_child(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(s.exit_child(&node).unwrap(), Some(second));
}
