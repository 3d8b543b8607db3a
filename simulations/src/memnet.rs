//! A deterministic in-memory network: one coordinator engine and N participants, each
//! the participant's own driver core ([`DriverCore`], the one `cohort join` runs) with
//! an in-memory store, simulated time, seeded per-message latency and loss, and fault
//! injection on the links. Everything that happens at the same simulated millisecond is
//! handled together: the coordinator first, then the participants concerned, in parallel.
//!
//! Messages are handed over as values (no serialization) and counted with
//! `codec::encoded_len`, so a batch's shared proposal body is encoded once and every
//! participant receives the same bytes, as a QUIC driver would send them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Transaction, Txid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use cohort_common::chain::Chain;
use cohort_common::codec::encoded_len;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{ToCoordinator, ToParticipant};
use cohort_coordinator::engine::{Coordinator, Event as CoordEvent, Inbound, PeerId};
use cohort_participant::driver::{
    Action, DriverCore, DriverError, DriverSetup, PersistJob, Progress,
};
use cohort_participant::store::{ExitPathRecord, ParticipantStore};

/// A misbehaviour injected into a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Disconnects instead of sending its signatures.
    Drop,
    /// Sends a corrupted partial signature.
    InvalidSig,
    /// Goes silent instead of sending its signatures.
    Timeout,
    /// Sends its signatures, then disconnects (an honest participant whose link drops).
    LeaveAfter,
}

/// The phase in which a faulty participant misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPhase {
    /// Instead of its tree partial signatures.
    Tree,
    /// Instead of its deposit partial signatures.
    Deposit,
}

/// A participant's injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// When.
    pub phase: FaultPhase,
}

/// Network behaviour.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Seed of latency and loss.
    pub seed: u64,
    /// One-way latency range, drawn per message, in whole milliseconds.
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
    /// Simulated time between a broadcast and the block that confirms it.
    pub block_delay: Duration,
    /// Simulated time a participant's driver takes to store its exit paths.
    pub persist_delay: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            seed: 1,
            latency_ms: (5, 50),
            loss: 0.0,
            block_delay: Duration::from_secs(1),
            persist_delay: Duration::from_millis(2),
        }
    }
}

/// Traffic and time counted by the network.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    /// Messages to participants.
    pub messages_to_participants: u64,
    /// Messages from participants.
    pub messages_from_participants: u64,
    /// Bytes to participants (frame bodies plus 4-byte headers).
    pub bytes_to_participants: u64,
    /// Bytes from participants.
    pub bytes_from_participants: u64,
    /// Messages lost on purpose.
    pub lost: u64,
    /// Process CPU time spent inside coordinator engine calls (includes its rayon work,
    /// not the ledger's checks of what it broadcasts).
    pub coordinator_cpu: Duration,
    /// Process CPU time the ledger spent accepting broadcast funding transactions.
    pub ledger_cpu: Duration,
    /// Process CPU time spent while the participants' drivers ran (in parallel on rayon's
    /// pool, whose idle spinning between jobs is counted too).
    pub participant_cpu: Duration,
    /// Simulated time at the end.
    pub simulated: Duration,
}

enum Delivery {
    Connect(usize),
    ToCoordinator(usize, ToCoordinator),
    Disconnect(usize),
    ToParticipant(usize, ToParticipant),
    Persisted(usize),
    Mine,
    CoordinatorTimer,
    ParticipantTimer(usize),
}

/// One participant slot.
pub struct Peer {
    /// Its driver.
    pub driver: DriverCore,
    /// The store its driver writes.
    pub store: Arc<dyn ParticipantStore>,
    /// Its injected fault, if any.
    pub fault: Option<Fault>,
    /// Whether it went silent or disconnected.
    pub gone: bool,
    /// Store writes its driver asked for, run when their simulated time is up.
    persisting: VecDeque<PersistJob>,
    /// The funding txid it saw finalized.
    pub finalized: Option<Txid>,
    /// Whether it saw its batch confirm.
    pub confirmed: bool,
    /// Whether it was refused, rejected a proposal or failed.
    pub failed: bool,
    /// Why its driver stopped, if it stopped with an error.
    pub error: Option<DriverError>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("driver", &self.driver)
            .field("fault", &self.fault)
            .field("gone", &self.gone)
            .field("finalized", &self.finalized)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A participant whose driver writes `store`, with an optional fault.
    pub fn new(store: Arc<dyn ParticipantStore>, setup: DriverSetup, fault: Option<Fault>) -> Self {
        Peer {
            driver: DriverCore::new(store.clone(), setup),
            store,
            fault,
            gone: false,
            persisting: VecDeque::new(),
            finalized: None,
            confirmed: false,
            failed: false,
            error: None,
        }
    }

    /// The exit paths its store holds for `funding_txid`.
    pub fn exit_paths(&self, funding_txid: &Txid) -> Vec<ExitPathRecord> {
        let all = self.store.exit_paths().unwrap_or_default();
        all.into_iter().filter(|p| p.funding_txid == *funding_txid).collect()
    }

    /// Whether its store holds exit paths for `funding_txid`.
    pub fn has_paths(&self, funding_txid: &Txid) -> bool {
        !self.exit_paths(funding_txid).is_empty()
    }
}

/// Coordinator-side events with the simulated time they happened at.
pub type EventLog = Vec<(Duration, CoordEvent)>;

/// The network: a coordinator, its participants, the ledger, and a queue of deliveries.
pub struct MemNet {
    config: NetConfig,
    rng: StdRng,
    start: Instant,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    pending: HashMap<u64, Delivery>,
    /// The coordinator engine.
    pub coordinator: Coordinator,
    /// The participants; peer id `i` is participant `i`.
    pub peers: Vec<Peer>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// Traffic counters.
    pub stats: NetStats,
    /// Every coordinator event.
    pub events: EventLog,
    /// The real instant each event in `events` was seen.
    pub event_wall: Vec<Instant>,
    /// Funding transactions the coordinator broadcast, by txid.
    pub broadcast: BTreeMap<Txid, Transaction>,
    coordinator_timer: Option<Duration>,
    participant_timer: Vec<Option<Duration>>,
    /// Last scheduled arrival per link (to participant `i`, from participant `i`):
    /// a link delivers in order, as one QUIC stream does.
    link_down: Vec<Duration>,
    link_up: Vec<Duration>,
    ledger_in_step: Duration,
}

impl std::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNet")
            .field("now", &self.now)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl MemNet {
    /// A network around `coordinator` and `peers`; every peer connects at time zero.
    /// `start` is the instant simulated time starts at (the participants' clocks too).
    pub fn new(
        config: NetConfig,
        start: Instant,
        coordinator: Coordinator,
        peers: Vec<Peer>,
        ledger: Arc<Ledger>,
    ) -> Self {
        let n = peers.len();
        let mut net = MemNet {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            start,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            coordinator,
            peers,
            ledger,
            stats: NetStats::default(),
            events: Vec::new(),
            event_wall: Vec::new(),
            broadcast: BTreeMap::new(),
            coordinator_timer: None,
            participant_timer: vec![None; n],
            link_down: vec![Duration::ZERO; n],
            link_up: vec![Duration::ZERO; n],
            ledger_in_step: Duration::ZERO,
        };
        for i in 0..n {
            net.schedule(Duration::ZERO, Delivery::Connect(i));
        }
        net
    }

    /// The simulated instant now.
    pub fn instant(&self) -> Instant {
        self.start + self.now
    }

    fn schedule(&mut self, delay: Duration, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.pending.insert(self.seq, d);
    }

    /// The delay of the next message on a link: a fresh latency, but never before the
    /// previous message on the same link.
    fn link_delay(&mut self, up: bool, i: usize) -> Option<Duration> {
        let latency = self.latency()?;
        let link = if up { &mut self.link_up[i] } else { &mut self.link_down[i] };
        let arrival = (self.now + latency).max(*link);
        *link = arrival;
        Some(arrival - self.now)
    }

    fn latency(&mut self) -> Option<Duration> {
        if self.config.loss > 0.0 && self.rng.gen_bool(self.config.loss.min(1.0)) {
            self.stats.lost += 1;
            return None;
        }
        let (lo, hi) = self.config.latency_ms;
        Some(Duration::from_millis(self.rng.gen_range(lo..=hi.max(lo))))
    }

    /// Opens a round now (its challenge from the coordinator's random source).
    pub fn start_round(&mut self) -> u64 {
        let now = self.instant();
        let before = process_cpu();
        let round = self.coordinator.start_round(now);
        self.after_coordinator();
        let spent = process_cpu().saturating_sub(before);
        self.stats.coordinator_cpu +=
            spent.saturating_sub(std::mem::take(&mut self.ledger_in_step));
        round
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Coordinator) -> T) -> T {
        f(&mut self.coordinator)
    }

    /// Runs until nothing is left to deliver or `deadline` of simulated time passes.
    pub fn run(&mut self, deadline: Duration) {
        while let Some(Reverse((at, _))) = self.queue.peek().copied() {
            if at > deadline {
                break;
            }
            self.now = at;
            let mut batch = Vec::new();
            while let Some(Reverse((t, seq))) = self.queue.peek().copied() {
                if t != at {
                    break;
                }
                self.queue.pop();
                if let Some(d) = self.pending.remove(&seq) {
                    batch.push(d);
                }
            }
            self.step(batch);
        }
        self.stats.simulated = self.now;
    }

    fn step(&mut self, deliveries: Vec<Delivery>) {
        let now = self.instant();
        // Only coordinator work runs between these two readings.
        let before = process_cpu();
        let mut to_participants: BTreeMap<usize, Vec<Delivery>> = BTreeMap::new();
        let mut touched_coordinator = false;
        for d in deliveries {
            match d {
                Delivery::Connect(i) => {
                    self.timed(|c| c.peer_connected(now, i as PeerId));
                    touched_coordinator = true;
                }
                Delivery::Disconnect(i) => {
                    self.timed(|c| c.peer_disconnected(now, i as PeerId));
                    touched_coordinator = true;
                }
                Delivery::ToCoordinator(i, msg) => {
                    let max = self.coordinator.max_deposits_per_registration();
                    let input = Inbound::resolve(msg, self.ledger.as_ref(), max);
                    self.timed(|c| c.handle_message(now, i as PeerId, input));
                    touched_coordinator = true;
                }
                Delivery::CoordinatorTimer => {
                    if self.coordinator_timer.is_some_and(|t| t <= self.now) {
                        self.coordinator_timer = None;
                        self.timed(|c| c.handle_timeout(now));
                        touched_coordinator = true;
                    }
                }
                Delivery::Mine => {
                    let height = self.ledger.mine(1);
                    for txid in self.coordinator.awaiting_confirmation() {
                        if self.ledger.confirmations(&txid).ok().flatten().is_some_and(|c| c >= 1) {
                            self.timed(|c| c.confirmed(now, txid, height));
                            touched_coordinator = true;
                        }
                    }
                }
                other @ (Delivery::ToParticipant(i, _)
                | Delivery::Persisted(i)
                | Delivery::ParticipantTimer(i)) => {
                    to_participants.entry(i).or_default().push(other);
                }
            }
        }
        if touched_coordinator {
            self.after_coordinator();
            let spent = process_cpu().saturating_sub(before);
            self.stats.coordinator_cpu +=
                spent.saturating_sub(std::mem::take(&mut self.ledger_in_step));
        }
        self.run_participants(now, to_participants);
    }

    fn after_coordinator(&mut self) {
        let now = self.instant();
        while let Some(event) = self.coordinator.poll_event() {
            if let CoordEvent::PersistBatch { batch, attempt, .. } = &event {
                // The simulated store never fails: the broadcast request follows.
                let (b, a) = (*batch, *attempt);
                self.timed(|c| c.batch_persisted(now, b, a, Ok(())));
            }
            if let CoordEvent::Broadcast { batch, tx, .. } = &event {
                let before = process_cpu();
                let result = self.ledger.broadcast(tx).map_err(|e| e.to_string());
                let spent = process_cpu().saturating_sub(before);
                self.stats.ledger_cpu += spent;
                self.ledger_in_step += spent;
                if let Ok(txid) = &result {
                    self.broadcast.insert(*txid, (**tx).clone());
                    self.schedule(self.config.block_delay, Delivery::Mine);
                }
                let b = *batch;
                self.timed(|c| c.broadcast_result(now, b, result));
            }
            self.events.push((self.now, event));
            self.event_wall.push(Instant::now());
        }
        while let Some((peer, msg)) = self.coordinator.poll_transmit() {
            let i = peer as usize;
            if i >= self.peers.len() {
                continue;
            }
            self.stats.messages_to_participants += 1;
            self.stats.bytes_to_participants += 4 + encoded_len(&msg).unwrap_or(0) as u64;
            if let Some(delay) = self.link_delay(false, i) {
                self.schedule(delay, Delivery::ToParticipant(i, msg));
            }
        }
        let next = self.coordinator.poll_timeout().map(|t| t.saturating_duration_since(self.start));
        if next.is_some() && next != self.coordinator_timer {
            self.coordinator_timer = next;
            if let Some(t) = next {
                let delay = t.saturating_sub(self.now);
                self.schedule(delay, Delivery::CoordinatorTimer);
            }
        }
    }

    fn run_participants(&mut self, now: Instant, work: BTreeMap<usize, Vec<Delivery>>) {
        if work.is_empty() {
            return;
        }
        let mut slots: Vec<Vec<Delivery>> = (0..self.peers.len()).map(|_| Vec::new()).collect();
        for (i, d) in work {
            if let Some(slot) = slots.get_mut(i) {
                *slot = d;
            }
        }
        // Only participant work runs between these two readings.
        let before = process_cpu();
        let outputs: Vec<(usize, PeerOutput)> = self
            .peers
            .par_iter_mut()
            .zip(slots.par_iter_mut())
            .enumerate()
            .filter(|(_, (_, d))| !d.is_empty())
            .map(|(i, (peer, d))| (i, drive_peer(peer, now, std::mem::take(d))))
            .collect();
        self.stats.participant_cpu += process_cpu().saturating_sub(before);
        for (i, out) in outputs {
            for msg in out.transmit {
                self.stats.messages_from_participants += 1;
                self.stats.bytes_from_participants += 4 + encoded_len(&msg).unwrap_or(0) as u64;
                if let Some(delay) = self.link_delay(true, i) {
                    self.schedule(delay, Delivery::ToCoordinator(i, msg));
                }
            }
            if out.disconnect {
                if let Some(delay) = self.link_delay(true, i) {
                    self.schedule(delay, Delivery::Disconnect(i));
                }
            }
            for _ in 0..out.persist {
                self.schedule(self.config.persist_delay, Delivery::Persisted(i));
            }
            let next = self.peers[i]
                .driver
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.start));
            if next.is_some() && next != self.participant_timer[i] {
                self.participant_timer[i] = next;
                if let Some(t) = next {
                    let delay = t.saturating_sub(self.now);
                    self.schedule(delay, Delivery::ParticipantTimer(i));
                }
            }
        }
    }
}

#[derive(Default)]
struct PeerOutput {
    transmit: Vec<ToCoordinator>,
    /// Store writes scheduled.
    persist: usize,
    disconnect: bool,
}

/// Steps one participant's driver at `now`: its deliveries in, then what the driver asks
/// for out to the network (through the peer's fault, if any).
fn drive_peer(peer: &mut Peer, now: Instant, deliveries: Vec<Delivery>) -> PeerOutput {
    let mut out = PeerOutput::default();
    if peer.gone || peer.error.is_some() {
        return out;
    }
    let Peer { driver, fault, gone, persisting, finalized, confirmed, failed, error, .. } = peer;
    let mut observer = |p: &Progress| {
        match p {
            Progress::Finalized { txid } => *finalized = Some(*txid),
            Progress::Confirmed { .. } => *confirmed = true,
            Progress::Refused { .. }
            | Progress::ProposalRejected { .. }
            | Progress::Failed { .. } => {
                *failed = true;
            }
            _ => {}
        }
        ControlFlow::Continue(())
    };
    for d in deliveries {
        let result = match d {
            Delivery::ToParticipant(_, msg) => driver.handle_message(now, msg, &mut observer),
            Delivery::Persisted(_) => match persisting.pop_front() {
                Some(job) => {
                    let stored = job.run().map_err(DriverError::Store);
                    driver.exit_paths_stored(now, stored, &mut observer)
                }
                None => Ok(()),
            },
            Delivery::ParticipantTimer(_) if driver.poll_timeout().is_some_and(|t| t <= now) => {
                driver.handle_timeout(now);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            *error = Some(e);
            return out;
        }
    }
    loop {
        match driver.poll(now, &mut observer) {
            Ok(Action::Send(msg)) => {
                if let ControlFlow::Break(()) = through_fault(*fault, msg, &mut out) {
                    *gone = true;
                    return out;
                }
            }
            Ok(Action::Persist(job)) => {
                persisting.push_back(job);
                out.persist += 1;
            }
            Ok(Action::Done(_) | Action::Idle) => return out,
            Err(e) => {
                *error = Some(e);
                return out;
            }
        }
    }
}

/// Sends `msg` through a participant's injected fault; `Break` when the participant
/// goes silent or disconnects there.
fn through_fault(
    fault: Option<Fault>,
    mut msg: ToCoordinator,
    out: &mut PeerOutput,
) -> ControlFlow<()> {
    if let Some(fault) = fault {
        if hits(&fault, &msg) {
            match fault.kind {
                FaultKind::Drop => {
                    out.disconnect = true;
                    return ControlFlow::Break(());
                }
                FaultKind::Timeout => return ControlFlow::Break(()),
                FaultKind::InvalidSig => corrupt(&mut msg),
                FaultKind::LeaveAfter => {
                    out.transmit.push(msg);
                    out.disconnect = true;
                    return ControlFlow::Break(());
                }
            }
        }
    }
    out.transmit.push(msg);
    ControlFlow::Continue(())
}

/// Whether `msg` is what `fault` misbehaves on: the signatures of its phase.
pub(crate) fn hits(fault: &Fault, msg: &ToCoordinator) -> bool {
    matches!(
        (msg, fault.phase),
        (ToCoordinator::TreeSigs(_), FaultPhase::Tree)
            | (ToCoordinator::DepositSigs(_), FaultPhase::Deposit)
    )
}

/// Replaces the first partial signature of a TreeSigs or DepositSigs with a wrong one.
pub(crate) fn corrupt(msg: &mut ToCoordinator) {
    let wrong = musig2::secp::MaybeScalar::reduce_from(&[0x5a; 32]);
    match msg {
        ToCoordinator::TreeSigs(s) => {
            if let Some(p) = s.sigs.first_mut() {
                p.psig = wrong;
            }
        }
        ToCoordinator::DepositSigs(s) => {
            if let Some(p) = s.sigs.first_mut() {
                p.psig = wrong;
            }
        }
        _ => {}
    }
}

/// CPU time of the whole process (every thread, user and system), in nanoseconds from
/// `/proc/self/task/*/schedstat`; zero where that is not available.
pub fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(total)
}
