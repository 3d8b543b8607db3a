//! Fifty participants complete a round over real loopback QUIC with a coordinator
//! service in this process; their exits verify on the ledger.

use cohort_sim::quic::run_quic_round;
use cohort_sim::round::RoundConfig;

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
