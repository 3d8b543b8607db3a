//! Session unit tests: whole honest rounds against the test kit's coordinator on the
//! embedded ledger, aborts and retries, timeouts, cancel, shared caches.

use std::sync::Arc;
use std::time::Duration;

use cohort_common::codec::Encoded;
use cohort_common::messages::{
    Abort, AbortReason, Goodbye, NonceRequest, Reason, SignedTree, ToCoordinator, ToParticipant,
};

use super::testkit::Kit;
use super::{Event, PhaseName, SessionError, SharedCaches};

fn happy_round(n: usize, caches: Option<Arc<SharedCaches>>) -> Kit {
    let mut kit = Kit::new(n, caches);
    kit.register_all();
    let funding = kit.run_round(1);
    assert_eq!(kit.ledger.transaction(&funding.compute_txid()), Some(funding));
    for p in &kit.parties {
        assert_eq!(p.session.phase(), PhaseName::Confirmed);
        assert_eq!(p.session.poll_timeout(), None);
        let kinds: Vec<&str> = p
            .events
            .iter()
            .map(|e| match e {
                Event::Registered { .. } => "registered",
                Event::ProposalAccepted { .. } => "accepted",
                Event::PersistExitPaths { .. } => "persist",
                Event::DepositSigsSent { .. } => "deposit-sigs",
                Event::Finalized { .. } => "finalized",
                Event::Confirmed { .. } => "confirmed",
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["registered", "accepted", "persist", "deposit-sigs", "finalized", "confirmed"]
        );
    }
    // Every exit path of every participant is accepted by the ledger.
    for p in &kit.parties {
        let (_, _, paths) = p.persist_request().unwrap();
        assert_eq!(paths.len(), p.config.leaves.len() + 1);
        kit.publish_paths(&paths);
    }
    kit
}

#[test]
fn one_participant_full_round_funds_and_exits() {
    happy_round(1, None);
}

#[test]
fn three_participants_full_round_with_shared_caches() {
    let caches = Arc::new(SharedCaches::new());
    happy_round(3, Some(caches.clone()));
    // One body decoded for everyone, node key contexts shared.
    assert_eq!(caches.bodies(), 1);
    assert!(!caches.keys().is_empty());
}

#[test]
fn two_participants_full_round_without_caches() {
    happy_round(2, None);
}

#[test]
fn abort_then_retry_with_fresh_keys_and_nonces() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    kit.propose(&batch);
    let first_keys: Vec<_> = kit.parties.iter().map(|p| p.leaf_keys.clone()).collect();
    for (i, first) in first_keys.iter().enumerate() {
        kit.take_tree_sigs(i);
        let abort = Abort { batch: 0, attempt: 1, reason: AbortReason::Timeout, excluded: vec![] };
        kit.deliver(i, ToParticipant::Abort(abort));
        assert_eq!(kit.parties[i].session.phase(), PhaseName::AwaitingNonceRequest);
        // A nonce request for the same attempt is ignored.
        kit.deliver(i, ToParticipant::NonceRequest(NonceRequest { batch: 0, attempt: 1 }));
        assert!(kit.parties[i].outbox.is_empty());
        kit.deliver(i, ToParticipant::NonceRequest(NonceRequest { batch: 0, attempt: 2 }));
        kit.take_renonce(i);
        assert_eq!(kit.parties[i].session.phase(), PhaseName::AwaitingProposal);
        for (old, new) in first.iter().zip(&kit.parties[i].leaf_keys) {
            assert_ne!(old.0, new.0, "fresh cosigner key");
            assert!(old.1.iter().all(|n| !new.1.contains(n)), "fresh nonces");
        }
    }
    let funding = kit.run_round(2);
    assert!(kit.ledger.transaction(&funding.compute_txid()).is_some());
    for p in &kit.parties {
        assert_eq!(p.session.phase(), PhaseName::Confirmed);
        assert!(p.events.iter().any(|e| matches!(e, Event::Aborted { excluded: false, .. })));
    }
}

#[test]
fn excluded_participant_ends_and_abort_after_deposit_sigs_is_followed() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let mut batch = kit.build_batch(1);
    kit.propose(&batch);
    let sigs = vec![kit.take_tree_sigs(0), kit.take_tree_sigs(1)];
    kit.combine_tree(&mut batch, &sigs);
    kit.deliver(0, ToParticipant::SignedTree(Kit::signed_tree(&batch, 0)));
    kit.persist(0);
    kit.take_deposit_sigs(0);
    // Party 1 never answers; the coordinator aborts and excludes it.
    let excluded = vec![kit.parties[1].registration];
    for i in 0..2 {
        let abort = Abort {
            batch: 0,
            attempt: 1,
            reason: AbortReason::Timeout,
            excluded: excluded.clone(),
        };
        kit.deliver(i, ToParticipant::Abort(abort));
    }
    assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingNonceRequest);
    assert_eq!(kit.parties[1].session.phase(), PhaseName::Failed);
    assert!(matches!(
        kit.parties[1].events.last(),
        Some(Event::Failed(SessionError::Excluded { batch: 0, attempt: 1 }))
    ));
    assert!(kit.parties[1].outbox.is_empty(), "excluded: no cancel needed");
}

#[test]
fn messages_out_of_phase_change_nothing_and_never_sign_twice() {
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let mut batch = kit.build_batch(1);
    // A signed tree before any proposal is ignored.
    let early = SignedTree { batch: 0, attempt: 1, sigs: vec![] };
    kit.deliver(0, ToParticipant::SignedTree(early));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingProposal);
    let body = Encoded::new(&batch.body).unwrap();
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &body)));
    let sigs = kit.take_tree_sigs(0);
    // The same proposal again: ignored, no second signature.
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &body)));
    assert!(kit.parties[0].outbox.is_empty());
    assert_eq!(kit.parties[0].session.phase(), PhaseName::TreeSigned);
    kit.combine_tree(&mut batch, &[sigs]);
    let signed = Kit::signed_tree(&batch, 0);
    // A signed tree for another attempt is ignored.
    let mut other = signed.clone();
    other.attempt = 9;
    kit.deliver(0, ToParticipant::SignedTree(other));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::TreeSigned);
    kit.deliver(0, ToParticipant::SignedTree(signed.clone()));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingPersist);
    kit.persist(0);
    kit.take_deposit_sigs(0);
    // Persisting again or a repeated signed tree sends nothing more.
    kit.persist(0);
    kit.deliver(0, ToParticipant::SignedTree(signed));
    assert!(kit.parties[0].outbox.is_empty());
    // Too late to cancel.
    let now = kit.now;
    kit.parties[0].session.cancel(now);
    kit.pump(0);
    assert!(kit.parties[0].outbox.is_empty());
    assert_eq!(kit.parties[0].session.phase(), PhaseName::DepositsSigned);
}

#[test]
fn coordinator_timeout_cancels_and_fails() {
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let deadline = kit.parties[0].session.poll_timeout().unwrap();
    assert_eq!(deadline, kit.now + Duration::from_millis(4_000));
    let early = deadline - Duration::from_millis(1);
    kit.parties[0].session.handle_timeout(early);
    kit.pump(0);
    assert_eq!(kit.parties[0].session.phase(), PhaseName::AwaitingProposal);
    kit.parties[0].session.handle_timeout(deadline);
    kit.pump(0);
    assert_eq!(kit.parties[0].session.phase(), PhaseName::Failed);
    assert!(matches!(kit.parties[0].outbox.pop_front(), Some(ToCoordinator::Cancel(_))));
    assert!(matches!(
        kit.parties[0].events.last(),
        Some(Event::Failed(SessionError::CoordinatorTimeout {
            phase: PhaseName::AwaitingProposal
        }))
    ));
    assert_eq!(kit.parties[0].session.poll_timeout(), None);
}

#[test]
fn cancel_and_goodbye_end_the_session() {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let now = kit.now;
    kit.parties[0].session.cancel(now);
    kit.pump(0);
    assert!(matches!(kit.parties[0].outbox.pop_front(), Some(ToCoordinator::Cancel(_))));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::Failed);
    kit.deliver(1, ToParticipant::Goodbye(Goodbye { reason: Reason::new("bye") }));
    assert_eq!(kit.parties[1].session.phase(), PhaseName::Failed);
    // Nothing after the end.
    let batch = kit.build_batch(1);
    kit.propose(&batch);
    assert!(kit.parties.iter().all(|p| p.outbox.is_empty()));
}

#[test]
fn refused_registration_ends_the_session() {
    use cohort_common::messages::{RefusalReason, Refused};
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let refused = Refused { reason: RefusalReason::RegistrationClosed };
    kit.deliver(0, ToParticipant::Refused(refused));
    assert_eq!(kit.parties[0].session.phase(), PhaseName::Refused);
    assert_eq!(kit.parties[0].session.poll_timeout(), None);
}
