//! Debug helper: runs a small faulty round and prints where honest participants ended.
use cohort_sim::memnet::{Fault, FaultKind, FaultPhase};
fn main() {
    let mut c = cohort_sim::round::RoundConfig::new(200);
    c.faults = 0.05;
    c.fault = Some(Fault { kind: FaultKind::Timeout, phase: FaultPhase::Tree });
    let outcome = cohort_sim::round::run_round(&c).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for (i, p) in outcome.net.peers.iter().enumerate() {
        if outcome.faulty[i] {
            continue;
        }
        *counts
            .entry(format!("{:?} finalized={}", p.session.phase(), p.finalized.is_some()))
            .or_insert(0) += 1;
    }
    println!("{counts:#?}");
    for (t, e) in &outcome.net.events {
        let s = format!("{e:?}");
        if !s.starts_with("Registered") && !s.starts_with("Banned") {
            println!("{t:?} {}", &s[..s.len().min(120)]);
        }
    }
}
