//! A round's timeline, built from the engine's events: per batch, when each phase ran,
//! which attempts were aborted and retried, how many members were excluded when, and
//! how the batch ended; drawn as an SVG by [`RoundTimeline::svg`] (`timeline/svg.rs`).
//!
//! A driver feeds [`Timeline::observe`] every event it drains from the engine, with the
//! instant it drained it (the simulator's simulated clock, the service's real one). The
//! timeline keeps the last `keep` rounds and bounds what it keeps of each (batches,
//! spans, markers), so a long-running service can feed it forever.

mod svg;

pub use svg::MAX_ROWS;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bitcoin::Txid;
use cohort_common::messages::AbortReason;

use crate::engine::Event;

/// Batches of one round a timeline follows; events of later batches are counted only.
pub const MAX_BATCHES: usize = 100_000;

/// Phase spans, abort and exclusion markers kept per batch; past these, counted only.
/// Enough for every phase of `max_attempts` at its largest (100).
pub const MAX_MARKS_PER_BATCH: usize = 512;

/// A phase of a batch, named after the engine's batch typestate (`engine/batch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// `Renoncing`: waiting for fresh nonces after an aborted attempt.
    Renoncing,
    /// `SigningTree`: proposed; collecting tree partial signatures.
    SigningTree,
    /// `SigningDeposits`: the tree is signed; collecting deposit partial signatures.
    SigningDeposits,
    /// `Broadcasting`: storing, then broadcasting the funding transaction.
    Broadcasting,
    /// `Finalized`: broadcast; waiting for the confirmation.
    Finalized,
}

impl Phase {
    /// Every phase, in the order a batch goes through them (the legend's order).
    pub const ALL: [Phase; 5] = [
        Phase::Renoncing,
        Phase::SigningTree,
        Phase::SigningDeposits,
        Phase::Broadcasting,
        Phase::Finalized,
    ];

    /// The engine's name of the phase.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Renoncing => "Renoncing",
            Phase::SigningTree => "SigningTree",
            Phase::SigningDeposits => "SigningDeposits",
            Phase::Broadcasting => "Broadcasting",
            Phase::Finalized => "Finalized",
        }
    }

    /// What happens in it, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Phase::Renoncing => "fresh nonces",
            Phase::SigningTree => "tree partial signatures",
            Phase::SigningDeposits => "deposit partial signatures",
            Phase::Broadcasting => "store and broadcast",
            Phase::Finalized => "awaiting confirmation",
        }
    }
}

/// One phase of one attempt, as offsets from the round's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The phase.
    pub phase: Phase,
    /// The attempt it belongs to (a `Renoncing` span prepares this attempt).
    pub attempt: u32,
    /// When it began.
    pub start: Duration,
    /// When it ended; `None` while it runs.
    pub end: Option<Duration>,
}

/// An attempt given up: the batch retries without the culprits, or fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortMark {
    /// When.
    pub at: Duration,
    /// The attempt given up.
    pub attempt: u32,
    /// Why.
    pub reason: AbortReason,
}

/// Members excluded at one instant for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionMark {
    /// When.
    pub at: Duration,
    /// The attempt they were excluded from.
    pub attempt: u32,
    /// How many.
    pub count: usize,
    /// Why.
    pub reason: AbortReason,
}

/// How a batch ended, so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still signing or waiting.
    Running,
    /// Broadcast, not yet confirmed.
    Finalized {
        /// The funding txid.
        txid: Txid,
    },
    /// Confirmed.
    Confirmed {
        /// The funding txid.
        txid: Option<Txid>,
        /// The height.
        height: u32,
    },
    /// Given up: nothing was broadcast.
    Failed {
        /// Why.
        reason: AbortReason,
    },
}

/// One batch's timeline.
#[derive(Debug, Clone)]
pub struct BatchTimeline {
    /// The batch number.
    pub batch: u32,
    /// Its phases, in order.
    pub spans: Vec<Span>,
    /// Attempts proposed.
    pub attempts: u32,
    /// Members of its latest attempt.
    pub members: usize,
    /// Attempts given up.
    pub aborts: Vec<AbortMark>,
    /// Exclusions.
    pub exclusions: Vec<ExclusionMark>,
    /// Spans and markers dropped past [`MAX_MARKS_PER_BATCH`].
    pub dropped_marks: usize,
    /// How it ended.
    pub outcome: Outcome,
}

impl BatchTimeline {
    fn new(batch: u32) -> Self {
        BatchTimeline {
            batch,
            spans: Vec::new(),
            attempts: 0,
            members: 0,
            aborts: Vec::new(),
            exclusions: Vec::new(),
            dropped_marks: 0,
            outcome: Outcome::Running,
        }
    }

    /// Members excluded, over every attempt.
    pub fn excluded(&self) -> usize {
        self.exclusions.iter().map(|e| e.count).sum()
    }

    /// The attempt running now (or the last one).
    fn current_attempt(&self) -> u32 {
        self.spans.last().map_or(self.attempts, |s| s.attempt)
    }

    /// Ends the running span at `at`; a `Renoncing` span that took no time (a batch that
    /// failed as its attempt was aborted) is dropped.
    fn close(&mut self, at: Duration) {
        if let Some(span) = self.spans.last_mut().filter(|s| s.end.is_none()) {
            span.end = Some(at.max(span.start));
            if span.phase == Phase::Renoncing && span.end == Some(span.start) {
                self.spans.pop();
            }
        }
    }

    /// Ends the running span and starts `phase` of `attempt` at `at`.
    fn enter(&mut self, at: Duration, phase: Phase, attempt: u32) {
        self.close(at);
        if self.spans.len() >= MAX_MARKS_PER_BATCH {
            self.dropped_marks += 1;
            return;
        }
        self.spans.push(Span { phase, attempt, start: at, end: None });
    }

    fn exclude(&mut self, at: Duration, reason: &AbortReason) {
        let attempt = self.current_attempt();
        if let Some(last) = self.exclusions.last_mut() {
            if last.at == at && last.attempt == attempt && last.reason == *reason {
                last.count += 1;
                return;
            }
        }
        if self.exclusions.len() >= MAX_MARKS_PER_BATCH {
            self.dropped_marks += 1;
            return;
        }
        self.exclusions.push(ExclusionMark { at, attempt, count: 1, reason: reason.clone() });
    }

    fn abort(&mut self, at: Duration, attempt: u32, reason: &AbortReason) {
        if self.aborts.len() >= MAX_MARKS_PER_BATCH {
            self.dropped_marks += 1;
        } else {
            self.aborts.push(AbortMark { at, attempt, reason: reason.clone() });
        }
        self.enter(at, Phase::Renoncing, attempt.saturating_add(1));
    }
}

/// One round's timeline. Times are offsets from the first event seen of the round (its
/// `RoundStarted`, unless the timeline joined in the middle).
#[derive(Debug, Clone)]
pub struct RoundTimeline {
    /// The round number.
    pub round: u64,
    origin: Instant,
    /// Whether the timeline saw the round start (else it joined in the middle).
    pub complete: bool,
    /// Registrations accepted.
    pub registrations: usize,
    /// When registration closed.
    pub registration_closed: Option<Duration>,
    /// Batches formed, as registration closed.
    pub batches_formed: usize,
    /// The batches, by number.
    pub batches: BTreeMap<u32, BatchTimeline>,
    /// Batches past [`MAX_BATCHES`], proposed but not followed.
    pub untracked_batches: usize,
    /// When every batch was confirmed or failed.
    pub finished: Option<Duration>,
    /// The latest event seen.
    pub last: Duration,
}

impl RoundTimeline {
    /// An empty timeline of `round`, starting at `origin`.
    pub fn new(round: u64, origin: Instant) -> Self {
        RoundTimeline {
            round,
            origin,
            complete: false,
            registrations: 0,
            registration_closed: None,
            batches_formed: 0,
            batches: BTreeMap::new(),
            untracked_batches: 0,
            finished: None,
            last: Duration::ZERO,
        }
    }

    /// The instant its times count from.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Attempts aborted over every batch.
    pub fn aborted_attempts(&self) -> usize {
        self.batches.values().map(|b| b.aborts.len()).sum()
    }

    /// Batches that took more than one attempt.
    pub fn retried_batches(&self) -> usize {
        self.batches.values().filter(|b| b.attempts > 1).count()
    }

    /// Members excluded over every batch.
    pub fn excluded(&self) -> usize {
        self.batches.values().map(BatchTimeline::excluded).sum()
    }

    /// Batches whose outcome matches `f`.
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.batches.values().filter(|b| f(&b.outcome)).count()
    }

    /// Batch `batch`'s timeline, started on its first event; `None` past [`MAX_BATCHES`].
    fn batch(&mut self, batch: u32) -> Option<&mut BatchTimeline> {
        if !self.batches.contains_key(&batch) && self.batches.len() >= MAX_BATCHES {
            return None;
        }
        Some(self.batches.entry(batch).or_insert_with(|| BatchTimeline::new(batch)))
    }

    /// Records `event`, seen at offset `at`.
    fn record(&mut self, at: Duration, event: &Event) {
        self.last = self.last.max(at);
        match event {
            Event::RoundStarted { .. } => self.complete = true,
            Event::Registered { .. } => self.registrations += 1,
            Event::RegistrationClosed { registrations, batches, .. } => {
                self.registrations = *registrations;
                self.batches_formed = *batches;
                self.registration_closed = Some(at);
            }
            Event::Proposed { batch, attempt, members, .. } => match self.batch(*batch) {
                Some(b) => {
                    b.attempts = b.attempts.max(*attempt);
                    b.members = members.len();
                    b.enter(at, Phase::SigningTree, *attempt);
                }
                None if *attempt == 1 => self.untracked_batches += 1,
                None => {}
            },
            Event::TreeSigned { batch, attempt, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.enter(at, Phase::SigningDeposits, *attempt);
                }
            }
            Event::PersistBatch { batch, attempt, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.enter(at, Phase::Broadcasting, *attempt);
                }
            }
            Event::Excluded { batch, reason, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.exclude(at, reason);
                }
            }
            Event::AttemptAborted { batch, attempt, reason, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.abort(at, *attempt, reason);
                }
            }
            Event::BatchFailed { batch, reason, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.close(at);
                    b.outcome = Outcome::Failed { reason: reason.clone() };
                }
            }
            Event::BatchFinalized { batch, attempts, txid, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.enter(at, Phase::Finalized, *attempts);
                    b.outcome = Outcome::Finalized { txid: *txid };
                }
            }
            Event::BatchConfirmed { batch, height, .. } => {
                if let Some(b) = self.batch(*batch) {
                    b.close(at);
                    let txid = match b.outcome {
                        Outcome::Finalized { txid } => Some(txid),
                        _ => None,
                    };
                    b.outcome = Outcome::Confirmed { txid, height: *height };
                }
            }
            Event::RoundFinished { .. } => self.finished = Some(at),
            Event::Refused { .. }
            | Event::ChainUnavailable { .. }
            | Event::Banned { .. }
            | Event::Broadcast { .. } => {}
        }
    }

    /// The round drawn as a self-contained SVG: batches as rows, phases as bars,
    /// aborted attempts and exclusions marked (at most [`MAX_ROWS`] batches).
    pub fn svg(&self) -> String {
        svg::draw(self)
    }
}

/// The round an event belongs to, if any.
fn round_of(event: &Event) -> Option<u64> {
    match event {
        Event::RoundStarted { round, .. }
        | Event::Registered { round, .. }
        | Event::RegistrationClosed { round, .. }
        | Event::Proposed { round, .. }
        | Event::TreeSigned { round, .. }
        | Event::Excluded { round, .. }
        | Event::AttemptAborted { round, .. }
        | Event::PersistBatch { round, .. }
        | Event::Broadcast { round, .. }
        | Event::BatchFailed { round, .. }
        | Event::BatchFinalized { round, .. }
        | Event::BatchConfirmed { round, .. }
        | Event::RoundFinished { round } => Some(*round),
        Event::Refused { .. } | Event::ChainUnavailable { .. } | Event::Banned { .. } => None,
    }
}

/// The timelines of the last few rounds, fed the engine's events.
#[derive(Debug, Clone)]
pub struct Timeline {
    keep: usize,
    rounds: VecDeque<RoundTimeline>,
}

impl Timeline {
    /// A timeline keeping the last `keep` rounds (at least one).
    pub fn new(keep: usize) -> Self {
        Timeline { keep: keep.max(1), rounds: VecDeque::new() }
    }

    /// Records an event the engine handed out at `at`. An event of a round not seen yet
    /// starts that round's timeline (marked incomplete unless it is `RoundStarted`); the
    /// oldest round is dropped past `keep`.
    pub fn observe(&mut self, at: Instant, event: &Event) {
        let Some(round) = round_of(event) else { return };
        let index = match self.rounds.iter().position(|r| r.round == round) {
            Some(i) => i,
            None => {
                if self.rounds.len() >= self.keep {
                    self.rounds.pop_front();
                }
                self.rounds.push_back(RoundTimeline::new(round, at));
                self.rounds.len() - 1
            }
        };
        if let Some(r) = self.rounds.get_mut(index) {
            let offset = at.saturating_duration_since(r.origin);
            r.record(offset, event);
        }
    }

    /// The timeline of `round`, if kept.
    pub fn round(&self, round: u64) -> Option<&RoundTimeline> {
        self.rounds.iter().find(|r| r.round == round)
    }

    /// The most recent round's timeline.
    pub fn latest(&self) -> Option<&RoundTimeline> {
        self.rounds.back()
    }

    /// Every kept round, oldest first.
    pub fn rounds(&self) -> impl Iterator<Item = &RoundTimeline> {
        self.rounds.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{absolute::LockTime, transaction::Version, ScriptBuf, Transaction};
    use cohort_common::keys::Keypair;
    use cohort_common::messages::Reason;
    use rand::SeedableRng;

    use crate::engine::CoordinatorConfig;

    fn tx() -> Box<Transaction> {
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: Vec::new(),
            output: Vec::new(),
        };
        Box::new(tx)
    }

    fn started(round: u64) -> Event {
        let key = Keypair::from_rng(&mut rand::rngs::StdRng::seed_from_u64(7));
        let params = CoordinatorConfig::new(ScriptBuf::new()).round_params(round, key.public);
        Event::RoundStarted { round, params: Box::new(params) }
    }

    fn proposed(batch: u32, attempt: u32, members: usize) -> Event {
        let members = (0..members as u64).collect();
        Event::Proposed { round: 1, batch, attempt, funding_tx: tx(), members }
    }

    fn tree_signed(batch: u32, attempt: u32) -> Event {
        Event::TreeSigned { round: 1, batch, attempt, nodes: Vec::new() }
    }

    fn excluded(batch: u32, registration: u64, reason: AbortReason) -> Event {
        Event::Excluded { round: 1, batch, registration, reason }
    }

    fn aborted(batch: u32, attempt: u32, reason: AbortReason) -> Event {
        Event::AttemptAborted { round: 1, batch, attempt, reason }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Round 1: batch 0 goes through in one attempt; batch 1 loses two members to a
    /// timeout, retries, loses one more to an invalid signature and fails.
    fn sample() -> (Timeline, Instant) {
        let t0 = Instant::now();
        let mut tl = Timeline::new(4);
        let txid = tx().compute_txid();
        let closed = Event::RegistrationClosed { round: 1, registrations: 5, batches: 2 };
        let (members, funding_tx, nodes) = (vec![1, 2], tx(), Vec::new());
        let persist =
            Event::PersistBatch { round: 1, batch: 0, attempt: 1, members, funding_tx, nodes };
        let finalized =
            Event::BatchFinalized { round: 1, batch: 0, attempts: 1, txid, members: vec![1, 2] };
        let events = vec![
            (0, started(1)),
            (2000, closed),
            (2000, proposed(0, 1, 2)),
            (2000, proposed(1, 1, 3)),
            (2500, tree_signed(0, 1)),
            (3000, persist),
            (3000, Event::Broadcast { round: 1, batch: 0, attempt: 1, tx: tx() }),
            (3000, finalized),
            (4000, Event::BatchConfirmed { round: 1, batch: 0, attempt: 1, height: 102 }),
            (5000, excluded(1, 3, AbortReason::Timeout)),
            (5000, excluded(1, 4, AbortReason::Timeout)),
            (5000, aborted(1, 1, AbortReason::Timeout)),
            (5500, proposed(1, 2, 1)),
            (6000, tree_signed(1, 2)),
            (7000, excluded(1, 5, AbortReason::InvalidPartialSignature)),
            (7000, aborted(1, 2, AbortReason::InvalidPartialSignature)),
            (7000, Event::BatchFailed { round: 1, batch: 1, reason: AbortReason::MaxAttempts }),
            (7000, Event::RoundFinished { round: 1 }),
        ];
        for (at, event) in &events {
            tl.observe(t0 + ms(*at), event);
        }
        (tl, t0)
    }

    fn span(phase: Phase, attempt: u32, start: u64, end: u64) -> Span {
        Span { phase, attempt, start: ms(start), end: Some(ms(end)) }
    }

    #[test]
    fn spans_attempts_exclusions_and_outcomes() {
        let (tl, _) = sample();
        let round = tl.round(1).expect("round 1 kept");
        assert!(round.complete);
        assert_eq!(round.registrations, 5);
        assert_eq!(round.registration_closed, Some(ms(2000)));
        assert_eq!(round.finished, Some(ms(7000)));
        assert_eq!(round.last, ms(7000));

        let b0 = &round.batches[&0];
        assert_eq!(
            b0.spans,
            vec![
                span(Phase::SigningTree, 1, 2000, 2500),
                span(Phase::SigningDeposits, 1, 2500, 3000),
                span(Phase::Broadcasting, 1, 3000, 3000),
                span(Phase::Finalized, 1, 3000, 4000),
            ]
        );
        assert_eq!((b0.attempts, b0.members, b0.excluded()), (1, 2, 0));
        assert!(matches!(b0.outcome, Outcome::Confirmed { txid: Some(_), height: 102 }));

        let b1 = &round.batches[&1];
        // The renonce for a third attempt took no time (the batch failed): not kept.
        assert_eq!(
            b1.spans,
            vec![
                span(Phase::SigningTree, 1, 2000, 5000),
                span(Phase::Renoncing, 2, 5000, 5500),
                span(Phase::SigningTree, 2, 5500, 6000),
                span(Phase::SigningDeposits, 2, 6000, 7000),
            ]
        );
        assert_eq!((b1.attempts, b1.members, b1.excluded()), (2, 1, 3));
        let marks: Vec<(Duration, u32, usize)> =
            b1.exclusions.iter().map(|e| (e.at, e.attempt, e.count)).collect();
        assert_eq!(marks, vec![(ms(5000), 1, 2), (ms(7000), 2, 1)]);
        let aborts: Vec<(Duration, u32)> = b1.aborts.iter().map(|a| (a.at, a.attempt)).collect();
        assert_eq!(aborts, vec![(ms(5000), 1), (ms(7000), 2)]);
        assert_eq!(b1.outcome, Outcome::Failed { reason: AbortReason::MaxAttempts });

        assert_eq!(
            (round.retried_batches(), round.aborted_attempts(), round.excluded()),
            (1, 2, 3)
        );
    }

    #[test]
    fn svg_has_a_row_per_batch_a_legend_and_the_markers() {
        let (tl, _) = sample();
        let svg = tl.latest().expect("a round").svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("class=\"batch\"").count(), 2);
        assert!(svg.contains(">batch 0, 2 members</text>"));
        assert!(svg.contains(">batch 1, 1 members</text>"));
        assert_eq!(svg.matches("class=\"legend\"").count(), Phase::ALL.len() + 3);
        for phase in Phase::ALL {
            assert!(svg.contains(phase.name()), "legend lacks {}", phase.name());
        }
        assert_eq!(svg.matches("<g class=\"abort\">").count(), 2);
        assert_eq!(svg.matches("<g class=\"exclusion\">").count(), 2);
        assert!(svg.contains("2 excluded from attempt 1 at 5.00 s"));
        assert!(svg.contains("Cohort round 1: 5 users registered, 2 batches"));
        assert!(svg.contains("✓ confirmed, 1 attempt"));
        assert!(svg.contains("<title>height 102, funding txid "));
        assert!(svg.contains("✗ failed: the batch ran out of attemp…"));
        assert!(svg.contains("<title>the batch ran out of attempts</title>"));
        for tag in ["text", "g", "title", "rect"] {
            let open =
                svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count();
            assert_eq!(open, svg.matches(&format!("</{tag}>")).count(), "<{tag}> unbalanced");
        }
    }

    #[test]
    fn an_empty_round_draws() {
        let mut tl = Timeline::new(1);
        tl.observe(Instant::now(), &started(3));
        let svg = tl.latest().expect("round 3").svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("no batches formed"));
        assert!(svg.contains("Cohort round 3: 0 users registered, 0 batches"));
        let never = RoundTimeline::new(9, Instant::now()).svg();
        assert!(never.contains("joined mid-round"));
    }

    #[test]
    fn text_is_escaped() {
        let mut tl = Timeline::new(1);
        let t0 = Instant::now();
        tl.observe(t0, &started(1));
        tl.observe(t0, &proposed(0, 1, 1));
        let reason = AbortReason::Other(Reason::new("<script>alert(\"&\")</script>"));
        tl.observe(t0 + ms(10), &Event::BatchFailed { round: 1, batch: 0, reason });
        let svg = tl.latest().expect("round 1").svg();
        assert!(!svg.contains("<script"));
        assert!(svg.contains("&lt;script&gt;alert(&quot;&amp;&quot;)&lt;/script&gt;"));
    }

    #[test]
    fn rows_are_capped() {
        let mut tl = Timeline::new(1);
        let t0 = Instant::now();
        tl.observe(t0, &started(1));
        for b in 0..(svg::MAX_ROWS as u32 + 50) {
            tl.observe(t0 + ms(u64::from(b)), &proposed(b, 1, 1));
        }
        let svg = tl.latest().expect("round 1").svg();
        assert_eq!(svg.matches("class=\"batch\"").count(), svg::MAX_ROWS);
        assert!(svg.contains("… 50 more batches not drawn"));
    }

    #[test]
    fn keeps_the_last_rounds_and_joins_mid_round() {
        let mut tl = Timeline::new(2);
        let t0 = Instant::now();
        for round in 1..=3 {
            tl.observe(t0, &started(round));
        }
        assert_eq!(tl.rounds().map(|r| r.round).collect::<Vec<_>>(), vec![2, 3]);
        assert!(tl.round(1).is_none());

        let mut late = Timeline::new(2);
        late.observe(t0 + ms(50), &Event::RoundFinished { round: 8 });
        let round = late.round(8).expect("round 8");
        assert!(!round.complete);
        assert_eq!(round.origin(), t0 + ms(50));
        assert_eq!(round.finished, Some(Duration::ZERO));
    }

    #[test]
    fn marks_per_batch_are_bounded() {
        let mut tl = Timeline::new(1);
        let t0 = Instant::now();
        for attempt in 1..=(MAX_MARKS_PER_BATCH as u32 * 2) {
            let at = t0 + ms(u64::from(attempt) * 10);
            tl.observe(at, &proposed(0, attempt, 1));
            tl.observe(at + ms(1), &excluded(0, u64::from(attempt), AbortReason::Timeout));
            tl.observe(at + ms(1), &aborted(0, attempt, AbortReason::Timeout));
        }
        let b = &tl.latest().expect("a round").batches[&0];
        assert!(b.spans.len() <= MAX_MARKS_PER_BATCH);
        assert!(b.exclusions.len() <= MAX_MARKS_PER_BATCH);
        assert!(b.aborts.len() <= MAX_MARKS_PER_BATCH);
        assert!(b.dropped_marks > 0);
    }
}
