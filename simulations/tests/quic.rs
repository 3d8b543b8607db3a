//! Fifty participants complete a round over real loopback QUIC with a coordinator
//! service in this process; their exits verify on the ledger. Faulty participants
//! misbehave over QUIC as on the in-memory network and only they are excluded.

use cohort_sim::memnet::{Fault, FaultKind, FaultPhase};
use cohort_sim::quic::run_quic_round;
use cohort_sim::round::{run_round, RoundConfig};

#[test]
fn fifty_participants_complete_a_round_over_loopback_quic() {
    let config = RoundConfig { exits: 4, seed: 50, ..RoundConfig::new(50) };
    let report = run_quic_round(&config).expect("round over QUIC");
    assert_eq!(report.completed, 50, "{report}");
    assert_eq!(report.batches.len(), 1);
    assert!(report.batches[0].funding_txid.is_some());
    assert_eq!(report.batches[0].inputs, 50);
    // Each exit published its path with CPFP children and reclaimed its leaf after
    // exit_csv: every transaction was accepted by the ledger, or the run would have failed.
    assert_eq!(report.exits.len(), 4, "{report}");
    assert!(report.exits.iter().all(|e| e.vbytes > 0));
    assert!(report.bytes_to_participants > 0 && report.bytes_from_participants > 0);
}

#[test]
fn every_fault_kind_in_every_phase_over_quic_excludes_only_the_culprits() {
    let kinds = [FaultKind::Drop, FaultKind::InvalidSig, FaultKind::Timeout, FaultKind::LeaveAfter];
    let phases = [FaultPhase::Tree, FaultPhase::Deposit];
    for kind in kinds {
        for phase in phases {
            let config = RoundConfig {
                seed: 12,
                exits: 1,
                faults: 0.15,
                fault: Some(Fault { kind, phase }),
                ..RoundConfig::new(24)
            };
            let report = run_quic_round(&config).expect("round over QUIC with faults");
            let case = format!("{kind:?}/{phase:?}: {report}");
            assert!(report.faulty > 0, "the seed gives at least one culprit: {case}");
            // The same seed picks the same culprits on the in-memory network.
            let mem = run_round(&config).expect("the same round in memory");
            assert_eq!(report.faulty, mem.report.faulty, "{case}");
            assert_eq!(report.completed, 24 - report.faulty, "every honest user: {case}");
            assert_eq!(report.batches.len(), 1, "{case}");
            assert!(report.batches[0].funding_txid.is_some(), "{case}");
            if (kind, phase) == (FaultKind::LeaveAfter, FaultPhase::Deposit) {
                // Leaving after its deposit signatures, a culprit's deposit is in.
                assert_eq!(report.excluded, 0, "{case}");
                assert_eq!(report.batches[0].attempts, 1, "{case}");
                assert_eq!(report.batches[0].inputs, 24, "{case}");
            } else {
                assert_eq!(report.excluded, report.faulty, "only culprits excluded: {case}");
                assert_eq!(report.batches[0].attempts, 2, "{case}");
                assert_eq!(report.batches[0].inputs, report.completed, "{case}");
            }
            assert_eq!(report.exits.len(), 1, "{case}");
        }
    }
}
