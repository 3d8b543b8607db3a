//! What a running coordinator counts, in the Prometheus (OpenMetrics) text format: rounds,
//! registrations and refusals by reason, attempts, exclusions and bans by reason, batches
//! by outcome, phase durations, peers connected, engine, store and chain time, funding
//! transactions broadcast and confirmed, and service fees.
//!
//! The engine thread updates the metrics from the engine's events ([`Metrics::on_event`])
//! and from the time it spends in the engine, the store and the chain; the HTTP task
//! ([`super::http`]) encodes them on each scrape. Every metric is an atomic, so neither
//! side waits on the other.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bitcoin::{Amount, ScriptBuf};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::Event;

/// One label: its name and value.
type Labels = Vec<(&'static str, String)>;

/// Each running attempt's current phase and when it entered it, by (round, batch).
type PhaseClock = HashMap<(u64, u32), (&'static str, Instant)>;

/// Buckets of the duration histograms: 1 ms to about 65 s, doubling.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of one coordinator.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rounds: Counter,
    registrations: Counter,
    refusals: Family<Labels, Counter>,
    chain_unavailable: Counter,
    attempts: Counter,
    attempts_aborted: Family<Labels, Counter>,
    exclusions: Family<Labels, Counter>,
    bans: Counter,
    batches: Family<Labels, Counter>,
    phase_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    peers: Gauge,
    engine_seconds: Counter<f64, AtomicU64>,
    store_seconds: Histogram,
    chain_seconds: Histogram,
    broadcasts: Counter,
    confirmed: Counter,
    fees_sat: Counter,
    /// When each running attempt entered its current phase, and which phase that is.
    phases: std::sync::Mutex<PhaseClock>,
    /// The service fee output of each proposed attempt's funding transaction.
    fees_pending: std::sync::Mutex<HashMap<(u64, u32), Amount>>,
    payout: ScriptBuf,
}

impl Metrics {
    /// Metrics of a coordinator whose service fees go to `payout`.
    pub fn new(payout: ScriptBuf) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("cohort"),
            rounds: Counter::default(),
            registrations: Counter::default(),
            refusals: Family::default(),
            chain_unavailable: Counter::default(),
            attempts: Counter::default(),
            attempts_aborted: Family::default(),
            exclusions: Family::default(),
            bans: Counter::default(),
            batches: Family::default(),
            phase_seconds: Family::new_with_constructor(duration_buckets),
            peers: Gauge::default(),
            engine_seconds: Counter::default(),
            store_seconds: duration_buckets(),
            chain_seconds: duration_buckets(),
            broadcasts: Counter::default(),
            confirmed: Counter::default(),
            fees_sat: Counter::default(),
            phases: Default::default(),
            fees_pending: Default::default(),
            payout,
        };
        m.registry.register("rounds", "Rounds started", m.rounds.clone());
        m.registry.register("registrations", "Registrations accepted", m.registrations.clone());
        m.registry.register("refusals", "Registrations refused, by reason", m.refusals.clone());
        m.registry.register(
            "chain_unavailable",
            "Registrations that could not be checked: the chain backend failed",
            m.chain_unavailable.clone(),
        );
        m.registry.register("attempts", "Batch attempts proposed", m.attempts.clone());
        m.registry.register(
            "attempts_aborted",
            "Batch attempts aborted, by reason",
            m.attempts_aborted.clone(),
        );
        m.registry.register("exclusions", "Members excluded, by reason", m.exclusions.clone());
        m.registry.register("bans", "Deposits banned", m.bans.clone());
        m.registry.register(
            "batches",
            "Batches ended, by outcome (finalized, confirmed, failed)",
            m.batches.clone(),
        );
        m.registry.register(
            "phase_seconds",
            "Time a batch attempt spent in each signing phase",
            m.phase_seconds.clone(),
        );
        m.registry.register("peers", "Participants connected", m.peers.clone());
        m.registry.register(
            "engine_seconds",
            "Wall time the engine thread spent in the round engine",
            m.engine_seconds.clone(),
        );
        m.registry.register("store_seconds", "Latency of store writes", m.store_seconds.clone());
        m.registry.register("chain_seconds", "Latency of chain calls", m.chain_seconds.clone());
        m.registry.register(
            "funding_broadcasts",
            "Funding transactions handed to the chain",
            m.broadcasts.clone(),
        );
        m.registry.register(
            "funding_confirmed",
            "Funding transactions confirmed",
            m.confirmed.clone(),
        );
        m.registry.register(
            "service_fees_sat",
            "Service fees paid to the coordinator by finalized batches, in sat",
            m.fees_sat.clone(),
        );
        m
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A participant connected (`+1`) or left (`-1`).
    pub fn peers_changed(&self, delta: i64) {
        self.peers.inc_by(delta);
    }

    /// Time spent in the engine.
    pub fn engine_time(&self, spent: Duration) {
        self.engine_seconds.inc_by(spent.as_secs_f64());
    }

    /// Latency of one store write.
    pub fn store_time(&self, spent: Duration) {
        self.store_seconds.observe(spent.as_secs_f64());
    }

    /// Latency of one chain call.
    pub fn chain_time(&self, spent: Duration) {
        self.chain_seconds.observe(spent.as_secs_f64());
    }

    /// One engine event.
    pub fn on_event(&self, now: Instant, event: &Event) {
        let label = |name: &'static str, value: String| vec![(name, value)];
        match event {
            Event::RoundStarted { .. } => {
                self.rounds.inc();
            }
            Event::Registered { .. } => {
                self.registrations.inc();
            }
            Event::Refused { reason, .. } => {
                self.refusals.get_or_create(&label("reason", variant(reason))).inc();
            }
            Event::ChainUnavailable { .. } => {
                self.chain_unavailable.inc();
            }
            Event::Proposed { round, batch, funding_tx, .. } => {
                self.attempts.inc();
                self.enter(now, (*round, *batch), "tree_signatures");
                let fee = funding_tx
                    .output
                    .iter()
                    .filter(|o| o.script_pubkey == self.payout)
                    .map(|o| o.value)
                    .sum();
                lock(&self.fees_pending).insert((*round, *batch), fee);
            }
            Event::TreeSigned { round, batch, .. } => {
                self.enter(now, (*round, *batch), "deposit_signatures");
            }
            Event::PersistBatch { round, batch, .. } => {
                self.enter(now, (*round, *batch), "broadcast");
            }
            Event::Broadcast { .. } => {
                self.broadcasts.inc();
            }
            Event::Excluded { reason, .. } => {
                self.exclusions.get_or_create(&label("reason", variant(reason))).inc();
            }
            Event::AttemptAborted { round, batch, reason, .. } => {
                self.attempts_aborted.get_or_create(&label("reason", variant(reason))).inc();
                self.enter(now, (*round, *batch), "renonce");
            }
            Event::Banned { .. } => {
                self.bans.inc();
            }
            Event::BatchFailed { round, batch, .. } => {
                self.leave(now, (*round, *batch));
                lock(&self.fees_pending).remove(&(*round, *batch));
                self.batches.get_or_create(&label("outcome", "failed".into())).inc();
            }
            Event::BatchFinalized { round, batch, .. } => {
                self.leave(now, (*round, *batch));
                if let Some(fee) = lock(&self.fees_pending).remove(&(*round, *batch)) {
                    self.fees_sat.inc_by(fee.to_sat());
                }
                self.batches.get_or_create(&label("outcome", "finalized".into())).inc();
            }
            Event::BatchConfirmed { .. } => {
                self.confirmed.inc();
                self.batches.get_or_create(&label("outcome", "confirmed".into())).inc();
            }
            Event::RegistrationClosed { .. } | Event::RoundFinished { .. } => {}
        }
    }

    /// The attempt `key` enters `phase`: the time of the phase it leaves is observed.
    fn enter(&self, now: Instant, key: (u64, u32), phase: &'static str) {
        if let Some((left, since)) = lock(&self.phases).insert(key, (phase, now)) {
            self.observe(left, now.saturating_duration_since(since));
        }
    }

    /// The batch `key` ended: the time of its last phase is observed.
    fn leave(&self, now: Instant, key: (u64, u32)) {
        if let Some((left, since)) = lock(&self.phases).remove(&key) {
            self.observe(left, now.saturating_duration_since(since));
        }
    }

    fn observe(&self, phase: &'static str, spent: Duration) {
        let labels = vec![("phase", phase.to_owned())];
        self.phase_seconds.get_or_create(&labels).observe(spent.as_secs_f64());
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The name of an enum value's variant (`UnknownDeposit(..)` → `unknown_deposit`): a
/// label with few values, whatever the value carries.
fn variant(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let name = text.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_common::messages::{AbortReason, RefusalReason};

    #[test]
    fn labels_name_the_variant_only() {
        let op = bitcoin::OutPoint::null();
        assert_eq!(variant(&RefusalReason::UnknownDeposit(op)), "unknown_deposit");
        assert_eq!(variant(&AbortReason::Timeout), "timeout");
        assert_eq!(
            variant(&RefusalReason::FeeTooLow { max_fee: Amount::ZERO, required: Amount::ZERO }),
            "fee_too_low"
        );
    }

    #[test]
    fn events_are_counted_and_encoded() {
        let m = Metrics::new(ScriptBuf::new());
        let now = Instant::now();
        m.on_event(now, &Event::Refused { peer: 1, reason: RefusalReason::NoDeposits });
        m.on_event(now, &Event::Refused { peer: 2, reason: RefusalReason::NoDeposits });
        m.peers_changed(3);
        m.peers_changed(-1);
        let text = m.encode();
        assert!(text.contains("cohort_refusals_total{reason=\"no_deposits\"} 2"), "{text}");
        assert!(text.contains("cohort_peers 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
