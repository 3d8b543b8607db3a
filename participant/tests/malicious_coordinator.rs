//! A malicious coordinator against the public session API: every crafted proposal is
//! refused with its typed reason and nothing is signed; a bad final signature stops
//! the session before any deposit signature; deposit signatures wait for the driver's
//! confirmation that the exit paths are stored, for exactly that batch and attempt.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use cohort_common::codec::Encoded;
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    Confirmed, Finalized, NonceRequest, ProposalBody, ToCoordinator, ToParticipant, TreeLeaf,
};
use cohort_common::tree::{Scope, TreePlan};
use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Session, SessionConfig, SessionError,
    SharedCaches, SignedTreeError,
};

#[cfg(test)]
#[path = "../src/session/testkit.rs"]
mod testkit;

use testkit::{Batch, Kit};

/// Proposes to party 0 of two a body tampered by `tamper`; returns why it was refused
/// after checking that nothing was signed and `Cancel` was sent.
fn refused_with(tamper: impl FnOnce(&mut ProposalBody, &Batch)) -> ProposalError {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut body = batch.body.clone();
    tamper(&mut body, &batch);
    kit.tamper = Kit::body_for(0, body);
    kit.propose(&batch);
    kit.refusal()
}

fn own_leaf(batch: &Batch, party: usize, leaf: usize) -> usize {
    batch.your_leaves[party][leaf] as usize
}

#[test]
fn the_honest_proposal_is_accepted() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    kit.propose(&batch);
    assert!(kit.parties.iter().all(|p| p.sent_tree_sigs()));
}

#[test]
fn own_cosigner_key_swapped_out_of_the_tree_is_refused() {
    // A consistent liar: the funding output pays the root key of the tampered tree.
    let reason = refused_with(|body, batch| {
        let i = own_leaf(batch, 0, 0);
        body.leaves[i].cosigner = Keypair::random().point;
        let leaves: Arc<[TreeLeaf]> = body.leaves.clone().into();
        let plan = TreePlan::new(leaves, body.batch_key, body.tree, &Scope::Full, None).unwrap();
        body.funding_tx.output[0] = plan.root_output().unwrap();
    });
    assert_eq!(reason, ProposalError::OwnKeyMissing { node: 0, leaf: 0 });
    // A lazy one leaves the old root output: refused too.
    let reason = refused_with(|body, batch| {
        let i = own_leaf(batch, 0, 0);
        body.leaves[i].cosigner = Keypair::random().point;
    });
    assert_eq!(reason, ProposalError::RootScriptMismatch);
}

#[test]
fn own_cosigner_key_moved_to_another_leaf_is_refused() {
    // The key stays in every key set of the path, but not on the own leaf.
    let reason = refused_with(|body, batch| {
        let (a, b) = (own_leaf(batch, 0, 0), own_leaf(batch, 0, 1));
        let (ka, kb) = (body.leaves[a].cosigner, body.leaves[b].cosigner);
        body.leaves[a].cosigner = kb;
        body.leaves[b].cosigner = ka;
    });
    assert_eq!(reason, ProposalError::CosignerMismatch { leaf: 0 });
}

#[test]
fn a_changed_leaf_amount_is_refused() {
    let reason = refused_with(|body, batch| {
        let i = own_leaf(batch, 0, 0);
        body.leaves[i].output.amount -= Amount::from_sat(1);
    });
    assert_eq!(reason, ProposalError::LeafMismatch { leaf: 0 });
}

#[test]
fn a_remainder_paying_elsewhere_is_refused() {
    let reason = refused_with(|body, batch| {
        let i = own_leaf(batch, 0, 1);
        body.leaves[i].output.script_pubkey = testkit_script();
    });
    assert_eq!(reason, ProposalError::RemainderScript);
}

#[test]
fn a_fee_above_max_is_refused() {
    // The coordinator shrinks the remainder and keeps the difference.
    let reason = refused_with(|body, batch| {
        let i = own_leaf(batch, 0, 1);
        body.leaves[i].output.amount -= Amount::from_sat(30_000);
    });
    assert!(matches!(reason, ProposalError::FeeAboveMax { .. }), "{reason:?}");
}

#[test]
fn a_wrong_funding_output_script_is_refused() {
    let reason = refused_with(|body, _| {
        body.funding_tx.output[0].script_pubkey = testkit_script();
    });
    assert_eq!(reason, ProposalError::RootScriptMismatch);
}

#[test]
fn a_wrong_funding_output_amount_is_refused() {
    let reason = refused_with(|body, _| {
        body.funding_tx.output[0].value += Amount::from_sat(1);
    });
    assert!(matches!(reason, ProposalError::RootAmountMismatch { .. }), "{reason:?}");
}

#[test]
fn a_funding_tx_not_spending_the_deposits_is_refused() {
    let reason = refused_with(|body, batch| {
        let input = batch.deposit_inputs[0][0] as usize;
        body.funding_tx.input[input].previous_output =
            OutPoint { txid: Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), vout: 3 };
    });
    assert!(matches!(reason, ProposalError::FundingMissingDeposit { .. }), "{reason:?}");
}

#[test]
fn a_wrong_deposit_prevout_is_refused() {
    let reason = refused_with(|body, batch| {
        let input = batch.deposit_inputs[0][0] as usize;
        body.funding_prevouts[input].value += Amount::from_sat(1);
    });
    assert!(matches!(reason, ProposalError::PrevoutMismatch { .. }), "{reason:?}");
}

#[test]
fn another_round_or_attempt_or_garbage_is_refused() {
    let reason = refused_with(|body, _| body.attempt = 2);
    assert!(matches!(reason, ProposalError::WrongBatchOrAttempt { .. }), "{reason:?}");
    let reason = refused_with(|body, _| body.round += 1);
    assert!(matches!(reason, ProposalError::WrongRound { .. }), "{reason:?}");
    let reason = refused_with(|body, _| body.tree.radix = 3);
    assert!(matches!(reason, ProposalError::TreeParams { .. }), "{reason:?}");

    let mut kit = Kit::new(1, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut bytes = Encoded::new(&batch.body).unwrap().bytes().to_vec();
    bytes.truncate(bytes.len() / 2);
    let garbage = Encoded::<ProposalBody>::from_bytes(bytes);
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &garbage)));
    assert!(matches!(
        kit.parties[0].events.last(),
        Some(Event::Failed(SessionError::ProposalRejected(ProposalError::BodyDecode(_))))
    ));
    assert!(!kit.parties[0].sent_tree_sigs());
}

#[test]
fn node_nonces_for_other_nodes_are_refused() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let body = Encoded::new(&batch.body).unwrap();
    let mut proposal = Kit::proposal(&batch, 0, &body);
    proposal.node_nonces.pop();
    kit.deliver(0, ToParticipant::Proposal(proposal));
    assert!(matches!(
        kit.parties[0].events.last(),
        Some(Event::Failed(SessionError::ProposalRejected(ProposalError::NonceSetMismatch { .. })))
    ));
    assert!(!kit.parties[0].sent_tree_sigs());
}

#[test]
fn an_invalid_final_signature_stops_before_deposit_signatures() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let mut batch = kit.build_batch(1);
    kit.propose(&batch);
    let sigs = vec![kit.take_tree_sigs(0), kit.take_tree_sigs(1)];
    kit.combine_tree(&mut batch, &sigs);
    let mut signed = Kit::signed_tree(&batch, 0);
    let last = signed.sigs.len() - 1;
    let node = signed.sigs[last].node as usize;
    // A valid signature, but of another node's transaction.
    signed.sigs[last].sig = signed.sigs[0].sig;
    kit.deliver(0, ToParticipant::SignedTree(signed));
    let party = &kit.parties[0];
    assert!(matches!(
        party.events.last(),
        Some(Event::Failed(SessionError::SignedTree(SignedTreeError::InvalidSignature(n)))) if *n == node
    ));
    assert!(matches!(party.sent.last(), Some(ToCoordinator::Cancel(_))));
    assert!(party.persist_request().is_none());
    // Whatever the driver does next, no deposit signature goes out.
    let now = kit.now;
    kit.parties[0].session.exit_paths_persisted(now, 0, 1);
    kit.pump(0);
    assert!(!kit.parties[0].sent_deposit_sigs());
}

#[test]
fn missing_or_extra_final_signatures_are_refused() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let mut batch = kit.build_batch(1);
    kit.propose(&batch);
    let sigs = vec![kit.take_tree_sigs(0), kit.take_tree_sigs(1)];
    kit.combine_tree(&mut batch, &sigs);
    let mut missing = Kit::signed_tree(&batch, 0);
    missing.sigs.pop();
    kit.deliver(0, ToParticipant::SignedTree(missing));
    assert!(matches!(
        kit.parties[0].events.last(),
        Some(Event::Failed(SessionError::SignedTree(SignedTreeError::MissingNode(_))))
    ));
    let mut extra = Kit::signed_tree(&batch, 1);
    let dup = extra.sigs[0];
    extra.sigs.push(dup);
    kit.deliver(1, ToParticipant::SignedTree(extra));
    assert!(matches!(
        kit.parties[1].events.last(),
        Some(Event::Failed(SessionError::SignedTree(SignedTreeError::DuplicateNode(_))))
    ));
    assert!(kit.parties.iter().all(|p| !p.sent_deposit_sigs()));
}

#[test]
fn deposit_signatures_wait_for_the_exact_persist_confirmation() {
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let mut batch = kit.build_batch(1);
    kit.propose(&batch);
    let sigs = vec![kit.take_tree_sigs(0)];
    kit.combine_tree(&mut batch, &sigs);
    let signed = Kit::signed_tree(&batch, 0);
    kit.deliver(0, ToParticipant::SignedTree(signed.clone()));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingPersist);
    let (b, a, paths): (u32, u32, Vec<ExitPath>) = kit.parties[0].persist_request().unwrap();
    assert_eq!((b, a, paths.len()), (0, 1, 2));

    // The driver holds the confirmation back while everything else arrives.
    let body = Encoded::new(&batch.body).unwrap();
    let txid = batch.body.funding_tx.compute_txid();
    for round in 0..5 {
        kit.advance(Duration::from_millis(100));
        kit.deliver(0, ToParticipant::SignedTree(signed.clone()));
        kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &body)));
        kit.deliver(0, ToParticipant::Finalized(Finalized { batch: 0, txid }));
        kit.deliver(0, ToParticipant::Confirmed(Confirmed { batch: 0, height: round }));
        kit.deliver(0, ToParticipant::NonceRequest(NonceRequest { batch: 0, attempt: 2 }));
        let now = kit.now;
        kit.parties[0].session.handle_timeout(now);
        kit.pump(0);
        assert!(!kit.parties[0].sent_deposit_sigs(), "round {round}");
        assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingPersist);
    }
    // Confirmations of another batch or attempt do not release them.
    let now = kit.now;
    for (b, a) in [(0, 2), (1, 1), (0, 0)] {
        kit.parties[0].session.exit_paths_persisted(now, b, a);
        kit.pump(0);
        assert!(!kit.parties[0].sent_deposit_sigs());
    }
    // The right one does, exactly once.
    kit.parties[0].session.exit_paths_persisted(now, 0, 1);
    kit.pump(0);
    let deposit_sigs =
        kit.parties[0].sent.iter().filter(|m| matches!(m, ToCoordinator::DepositSigs(_))).count();
    assert_eq!(deposit_sigs, 1);
    assert_eq!(kit.parties[0].session.phase(), PhaseName::DepositsSigned);
    assert!(kit.parties[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::DepositSigsSent { batch: 0, attempt: 1 })));
}

#[test]
fn shared_caches_still_check_each_participant() {
    // Two participants share caches and one body; party 1's proposal lists party 0's
    // leaves as its own: the shared decoded body does not make party 1 accept it.
    let caches = Arc::new(SharedCaches::new());
    let mut kit = Kit::new(2, Some(caches.clone()));
    kit.register_all();
    let batch = kit.build_batch(1);
    let body = Encoded::new(&batch.body).unwrap();
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &body)));
    let mut stolen = Kit::proposal(&batch, 1, &body);
    stolen.your_leaves = batch.your_leaves[0].clone();
    kit.deliver(1, ToParticipant::Proposal(stolen));
    assert!(kit.parties[0].sent_tree_sigs());
    assert!(!kit.parties[1].sent_tree_sigs());
    assert_eq!(caches.bodies(), 1);
}

/// A script paying nobody the participant knows.
fn testkit_script() -> ScriptBuf {
    cohort_common::exit::p2tr_single(&Keypair::random())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
    /// A body with one flipped byte never panics the session, and is signed only when
    /// everything the participant's money depends on is unchanged (the flip hit, say,
    /// the coordinator's own output or the funding tx's version).
    #[test]
    fn a_mutated_body_is_signed_only_if_nothing_of_ours_changed(
        at in 0usize..4_000,
        flip in 1u8..=255,
    ) {
        let mut kit = Kit::new(1, None);
        kit.register_all();
        let batch = kit.build_batch(1);
        let mut bytes = Encoded::new(&batch.body).unwrap().bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] ^= flip;
        let mutated = Encoded::<ProposalBody>::from_bytes(bytes);
        kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &mutated)));
        proptest::prop_assert!(!kit.parties[0].sent_deposit_sigs());
        if kit.parties[0].sent_tree_sigs() {
            let (m, h) = (mutated.decode(1 << 23).unwrap(), &batch.body);
            proptest::prop_assert_eq!(&m.leaves, &h.leaves);
            proptest::prop_assert_eq!(&m.funding_tx.output[0], &h.funding_tx.output[0]);
            proptest::prop_assert_eq!(m.funding_tx.input[0].previous_output,
                h.funding_tx.input[0].previous_output);
            proptest::prop_assert_eq!(&m.funding_prevouts, &h.funding_prevouts);
            proptest::prop_assert_eq!((m.batch_key, m.tree), (h.batch_key, h.tree));
        }
    }
}
