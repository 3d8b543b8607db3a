//! A whole round through the real engines: N participant sessions and one coordinator
//! on the in-memory network, deposits on the embedded ledger, faults injected on
//! demand, and a sample of exits executed from the exit paths participants stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use cohort_common::chain::Chain;
use cohort_common::exit::{p2tr_single, reclaim_tx, FeeInput};
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::TreeParams;
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::{BatchPhase, Coordinator, CoordinatorConfig, Event as CoordEvent};
use cohort_coordinator::timeline::{RoundTimeline, Timeline};
use cohort_participant::driver::{DriverSetup, SimulatedClock};
use cohort_participant::session::{OwnedDeposit, Randomness, SessionConfig, SharedCaches};
use cohort_participant::store::{
    DepositRecord, DepositStatus, ExitPathRecord, MemoryStore, ParticipantStore,
};

use crate::local::{publish_path, ExitCost, User};
use crate::memnet::{EventLog, Fault, MemNet, NetConfig, NetStats, Peer};
use crate::run::fund_users;

/// Mixed into the run's seed for the coordinator engine's own random source.
const COORDINATOR_RNG: u64 = 0x636f_6f72_6469_6e61;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct RoundConfig {
    /// Participants, one deposit each.
    pub users: usize,
    /// Tree shape (radix and largest depth).
    pub tree: TreeParams,
    /// Largest funding transaction weight.
    pub max_batch_weight: u64,
    /// Seed of keys, amounts, faults and the network.
    pub seed: u64,
    /// Share of participants that misbehave.
    pub faults: f64,
    /// How they misbehave (when `faults > 0`).
    pub fault: Option<Fault>,
    /// Message loss probability.
    pub loss: f64,
    /// Users whose exit is executed after the round.
    pub exits: usize,
    /// Where to write `batch-K.json` per batch.
    pub export: Option<PathBuf>,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

impl RoundConfig {
    /// The coordinator engine's configuration for this run: every user in one round, whose
    /// registration stays open `window`, each signing phase at most `phase`.
    pub fn coordinator_config(
        &self,
        payout: ScriptBuf,
        window: Duration,
        phase: Duration,
    ) -> CoordinatorConfig {
        let mut c = CoordinatorConfig::new(payout);
        c.tree = self.tree;
        c.max_batch_weight = self.max_batch_weight;
        c.max_registrations = self.users;
        c.registration_window = window;
        c.phase_timeout = phase;
        c
    }

    /// A fault-free round of `users` with defaults.
    pub fn new(users: usize) -> Self {
        RoundConfig {
            users,
            tree: TreeParams { radix: 4, max_depth: 8 },
            max_batch_weight: cohort_common::params::DEFAULT_MAX_BATCH_WEIGHT,
            seed: 1,
            faults: 0.0,
            fault: None,
            loss: 0.0,
            exits: 3,
            export: None,
            progress: false,
        }
    }
}

/// One batch in the report.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// Attempts it took.
    pub attempts: u32,
    /// Its funding txid (none if it failed).
    pub funding_txid: Option<String>,
    /// Leaves in its tree.
    pub leaves: usize,
    /// Deposits it spends.
    pub inputs: usize,
}

/// What the confirmed batches cost on chain, against paying every leaf its own output.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChainFootprint {
    /// Virtual bytes of every funding transaction.
    pub funding_vbytes: u64,
    /// Virtual bytes of the same inputs paying every leaf its own output instead.
    pub own_outputs_vbytes: u64,
    /// Node transactions of every tree.
    pub nodes: usize,
    /// Transactions on the longest root-to-leaf path.
    pub depth: usize,
}

impl ChainFootprint {
    /// Adds one batch: its signed funding transaction and its signed nodes (root first).
    pub fn add(&mut self, funding: &Transaction, nodes: &[Transaction]) {
        self.funding_vbytes += funding.vsize() as u64;
        let mut baseline = funding.clone();
        baseline.output =
            crate::export::leaf_outputs(nodes).into_iter().map(|(_, _, o)| o.clone()).collect();
        self.own_outputs_vbytes += baseline.vsize() as u64;
        self.nodes += nodes.len();
        // Depth: the longest chain of nodes, each spending the one before.
        let mut depth: std::collections::HashMap<bitcoin::Txid, usize> = Default::default();
        for t in nodes {
            let d = depth.get(&t.input[0].previous_output.txid).copied().unwrap_or(0) + 1;
            depth.insert(t.compute_txid(), d);
            self.depth = self.depth.max(d);
        }
    }
}

/// One executed exit.
#[derive(Debug, Clone, Serialize)]
pub struct ExitReport {
    /// The user.
    pub user: usize,
    /// Node transactions it published (shared ones are counted once).
    pub nodes: usize,
    /// Virtual bytes published, reclaim included.
    pub vbytes: u64,
}

/// What the round measured.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// `mem` (in-memory network, simulated time) or `quic` (loopback QUIC, real time).
    pub transport: &'static str,
    /// Participants.
    pub users: usize,
    /// Honest users whose leaves are in a confirmed batch.
    pub completed: usize,
    /// Participants excluded from a batch.
    pub excluded: usize,
    /// Participants given a fault.
    pub faulty: usize,
    /// Batches.
    pub batches: Vec<BatchReport>,
    /// On-chain footprint of the confirmed batches.
    pub chain: ChainFootprint,
    /// Wall time of the whole run, setup included.
    pub wall_ms: u64,
    /// Wall time per phase: deposits, registration, tree signing, deposit signing and
    /// broadcast, confirmation.
    pub phase_ms: PhaseTimes,
    /// CPU time inside the coordinator engine (its rayon work included).
    pub coordinator_cpu_ms: u64,
    /// CPU time the embedded ledger spent checking the funding transactions.
    pub ledger_cpu_ms: u64,
    /// CPU time inside the participants' drivers, all of them together (in-memory
    /// transport; `None` over QUIC, where the clients share the process's runtime).
    pub participant_cpu_ms: Option<u64>,
    /// Messages to participants.
    pub messages_to_participants: u64,
    /// Messages from participants.
    pub messages_from_participants: u64,
    /// Bytes to participants.
    pub bytes_to_participants: u64,
    /// Bytes from participants.
    pub bytes_from_participants: u64,
    /// Messages lost on purpose.
    pub lost_messages: u64,
    /// Simulated protocol time.
    pub simulated_ms: u64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Exits executed on the ledger.
    pub exits: Vec<ExitReport>,
    /// Where the round's timeline was drawn (`--timeline`), if it was.
    pub timeline: Option<PathBuf>,
}

/// Wall time of each phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Funding every user's deposit.
    pub deposits: u64,
    /// Until registration closed and every batch was proposed.
    pub registration: u64,
    /// Until the last tree was signed.
    pub tree_signing: u64,
    /// Until the last funding transaction was broadcast.
    pub deposit_signing: u64,
    /// Until the last confirmation.
    pub confirmation: u64,
    /// Executing the exits.
    pub exits: u64,
}

impl std::fmt::Display for RoundReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.phase_ms;
        writeln!(f, "users              {} ({} faulty)", self.users, self.faulty)?;
        writeln!(f, "completed          {} honest users in confirmed batches", self.completed)?;
        writeln!(f, "excluded           {}", self.excluded)?;
        writeln!(f, "batches            {}", self.batches.len())?;
        for (k, b) in self.batches.iter().enumerate() {
            writeln!(
                f,
                "  batch {k:<4} {} attempt(s), {} inputs, {} leaves, funding {}",
                b.attempts,
                b.inputs,
                b.leaves,
                b.funding_txid.as_deref().unwrap_or("none (failed)")
            )?;
        }
        let c = &self.chain;
        if c.funding_vbytes > 0 {
            let per = c.funding_vbytes as f64 / self.completed.max(1) as f64;
            let own = c.own_outputs_vbytes as f64 / self.completed.max(1) as f64;
            writeln!(f, "tree               {} node transactions, depth {}", c.nodes, c.depth)?;
            writeln!(
                f,
                "on chain           {} vbytes of funding txs, {per:.1} per user (one output per user: {own:.1})",
                c.funding_vbytes
            )?;
        }
        writeln!(f, "wall time          {:.2} s", self.wall_ms as f64 / 1e3)?;
        if self.transport == "quic" {
            writeln!(f, "  deposits         {:>8} ms", p.deposits)?;
            writeln!(f, "  round (connects to last confirmation) {} ms", p.deposit_signing)?;
            writeln!(f, "  exits            {:>8} ms", p.exits)?;
            writeln!(
                f,
                "coordinator CPU    {:.2} s (service threads: engine, its rayon pool, QUIC runtime; \
                 of which ~{:.2} s the embedded ledger's libbitcoinkernel checks)",
                self.coordinator_cpu_ms as f64 / 1e3,
                self.ledger_cpu_ms as f64 / 1e3
            )?;
            writeln!(
                f,
                "to participants    {:.1} MiB of UDP",
                self.bytes_to_participants as f64 / 1048576.0
            )?;
            writeln!(
                f,
                "from participants  {:.1} MiB of UDP",
                self.bytes_from_participants as f64 / 1048576.0
            )?;
        } else {
            writeln!(f, "  deposits         {:>8} ms", p.deposits)?;
            writeln!(f, "  registration     {:>8} ms", p.registration)?;
            writeln!(f, "  tree signing     {:>8} ms", p.tree_signing)?;
            writeln!(f, "  deposit signing  {:>8} ms", p.deposit_signing)?;
            writeln!(f, "  confirmation     {:>8} ms", p.confirmation)?;
            writeln!(f, "  exits            {:>8} ms", p.exits)?;
            writeln!(f, "coordinator CPU    {:.2} s", self.coordinator_cpu_ms as f64 / 1e3)?;
            if let Some(cpu) = self.participant_cpu_ms {
                writeln!(
                    f,
                    "participant CPU    {:.2} s ({} drivers together)",
                    cpu as f64 / 1e3,
                    self.users
                )?;
            }
            writeln!(
                f,
                "ledger CPU         {:.2} s (libbitcoinkernel script checks of the funding txs)",
                self.ledger_cpu_ms as f64 / 1e3
            )?;
            writeln!(
                f,
                "to participants    {} messages, {:.1} MiB",
                self.messages_to_participants,
                self.bytes_to_participants as f64 / 1048576.0
            )?;
            writeln!(
                f,
                "from participants  {} messages, {:.1} MiB",
                self.messages_from_participants,
                self.bytes_from_participants as f64 / 1048576.0
            )?;
            writeln!(
                f,
                "simulated time     {:.2} s ({} messages lost)",
                self.simulated_ms as f64 / 1e3,
                self.lost_messages
            )?;
        }
        writeln!(
            f,
            "peak memory        {:.0} MiB ({:.0} KiB per participant, everything included)",
            self.peak_rss_bytes as f64 / 1048576.0,
            self.peak_rss_bytes as f64 / 1024.0 / self.users.max(1) as f64
        )?;
        for e in &self.exits {
            writeln!(
                f,
                "exit user {:<6}   {} node txs published, {} vbytes, leaf reclaimed after exit_csv",
                e.user, e.nodes, e.vbytes
            )?;
        }
        if let Some(path) = &self.timeline {
            writeln!(f, "timeline           {}", path.display())?;
        }
        Ok(())
    }
}

/// Everything a finished round leaves behind, for tests and exports.
#[derive(Debug)]
pub struct RoundOutcome {
    /// The report.
    pub report: RoundReport,
    /// The network with every engine in its final state.
    pub net: MemNet,
    /// The users.
    pub users: Vec<User>,
    /// Which users were given a fault.
    pub faulty: Vec<bool>,
}

/// Makes a simulated user's store.
pub type StoreMaker<'a> = dyn Fn(&User) -> Result<Arc<dyn ParticipantStore>> + 'a;

/// Runs one round on a fresh ledger, each user's driver on an in-memory store.
pub fn run_round(config: &RoundConfig) -> Result<RoundOutcome> {
    run_round_with(config, &|user| Ok(user_store(user)? as Arc<dyn ParticipantStore>))
}

/// Runs one round on a fresh ledger, each user's driver on the store `store` makes.
pub fn run_round_with(config: &RoundConfig, store: &StoreMaker<'_>) -> Result<RoundOutcome> {
    if config.users == 0 {
        bail!("--users must be at least 1");
    }
    let wall = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let ledger = Arc::new(Ledger::new());
    let coordinator_key = Keypair::from_rng(&mut rng);
    let payout = p2tr_single(&Keypair::from_rng(&mut rng));
    let exit_csv = cohort_common::params::DEFAULT_EXIT_CSV;

    let users = fund_users(&ledger, &mut rng, config.users, &coordinator_key)?;
    let deposits_ms = ms(wall.elapsed());

    let mut cc =
        config.coordinator_config(payout, Duration::from_secs(30), Duration::from_secs(20));
    cc.exit_csv = exit_csv;
    // The engine's batch keys, nonces and challenge come from the run's seed too.
    let engine_rng = rand::rngs::StdRng::seed_from_u64(config.seed ^ COORDINATOR_RNG);
    let coordinator = Coordinator::with_rng(coordinator_key.clone(), cc, Box::new(engine_rng))
        .context("round parameters")?;

    let caches = Arc::new(SharedCaches::new());
    let start = Instant::now();
    let clock = SimulatedClock { origin: start, origin_ms: SIMULATED_EPOCH_MS };
    let mut secrets = ParticipantRandomness::new(config.seed);
    let faults = draw_faults(config, &mut rng);
    let faulty: Vec<bool> = faults.iter().map(Option::is_some).collect();
    let mut peers = Vec::with_capacity(config.users);
    for (user, fault) in users.iter().zip(faults) {
        let mut setup = user_setup(user, &coordinator_key, exit_csv, &caches, secrets.next())?;
        setup.clock = Box::new(clock);
        peers.push(Peer::new(store(user)?, setup, fault));
    }

    let net_config = NetConfig { seed: config.seed, loss: config.loss, ..NetConfig::default() };
    let mut net = MemNet::new(net_config, start, coordinator, peers, ledger.clone());
    net.start_round();
    let bar = progress_bar(config.progress, config.users as u64);
    let started = Instant::now();
    let mut simulated = Duration::ZERO;
    while !net.coordinator.round_finished() && simulated < Duration::from_secs(3600) {
        simulated += Duration::from_millis(100);
        net.run(simulated);
        if let Some(bar) = &bar {
            let done = net.peers.iter().filter(|p| p.finalized.is_some()).count() as u64;
            bar.set_position(done);
            bar.set_message(phase_name(&net));
        }
    }
    // Let the last messages (Confirmed) arrive.
    net.run(simulated + Duration::from_secs(5));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let engine_done = Instant::now();

    let batches = batch_reports(&net);
    let chain = footprint(&net);
    let phase_ms = phase_times(&net, deposits_ms, started, engine_done);
    let completed = count_completed(&net, &users, &faulty)?;
    check_safety(&net, &users, &faulty)?;
    let excluded =
        net.events.iter().filter(|(_, e)| matches!(e, CoordEvent::Excluded { .. })).count();

    if let Some(dir) = &config.export {
        export_batches(&net, dir)?;
    }
    let exit_start = Instant::now();
    let exits = execute_exits(
        &net.ledger,
        &stored_paths(&net),
        &users,
        &faulty,
        &coordinator_key,
        config.exits,
        &mut rng,
    )?;
    let stats: NetStats = net.stats.clone();
    let mut phase_ms = phase_ms;
    phase_ms.exits = ms(exit_start.elapsed());
    let report = RoundReport {
        transport: "mem",
        users: config.users,
        completed,
        excluded,
        faulty: faulty.iter().filter(|f| **f).count(),
        batches,
        chain,
        wall_ms: ms(wall.elapsed()),
        phase_ms,
        coordinator_cpu_ms: ms(stats.coordinator_cpu),
        ledger_cpu_ms: ms(stats.ledger_cpu),
        participant_cpu_ms: Some(ms(stats.participant_cpu)),
        messages_to_participants: stats.messages_to_participants,
        messages_from_participants: stats.messages_from_participants,
        bytes_to_participants: stats.bytes_to_participants,
        bytes_from_participants: stats.bytes_from_participants,
        lost_messages: stats.lost,
        simulated_ms: ms(stats.simulated),
        peak_rss_bytes: peak_rss(),
        exits,
        timeline: None,
    };
    Ok(RoundOutcome { report, net, users, faulty })
}

/// Each user's injected fault: `config.fault` for a `config.faults` share of them, drawn
/// from the run's `rng` right after the deposits, so both transports pick the same
/// culprits for the same seed.
pub(crate) fn draw_faults<R: Rng>(config: &RoundConfig, rng: &mut R) -> Vec<Option<Fault>> {
    (0..config.users)
        .map(|_| match config.fault {
            Some(f) if config.faults > 0.0 && rng.gen_bool(config.faults.min(1.0)) => Some(f),
            _ => None,
        })
        .collect()
}

/// The timeline of the round in `events` (the in-memory network's log, simulated time),
/// if it holds one.
pub fn round_timeline(events: &EventLog) -> Option<RoundTimeline> {
    // Offsets count from the round's start, so any instant serves as simulated time zero.
    let zero = Instant::now();
    let mut timeline = Timeline::new(1);
    for (at, event) in events {
        timeline.observe(zero + *at, event);
    }
    timeline.latest().cloned()
}

/// The Unix time, in milliseconds, simulated time starts at (history timestamps).
pub const SIMULATED_EPOCH_MS: u64 = 1_700_000_000_000;

/// The key index a simulated user's remainder leaf records (its key is the deposit key).
const USER_LEAF_KEY_INDEX: u32 = 0;

/// A simulated user's driver setup: its one deposit, its extra leaf if any, and the
/// remainder paid to a virtual deposit of its own key; secrets from `randomness`, and
/// the caches shared in the process (the simulator opts in; a wallet runs without).
pub fn user_setup(
    user: &User,
    coordinator: &Keypair,
    exit_csv: u16,
    caches: &Arc<SharedCaches>,
    randomness: Randomness,
) -> Result<DriverSetup> {
    let remainder = DepositScript::virtual_deposit(user.key.public, coordinator.public, exit_csv)?;
    let session = SessionConfig {
        deposits: vec![OwnedDeposit {
            outpoint: user.outpoint,
            txout: user.txout.clone(),
            script: user.deposit.clone(),
            key: user.key.clone(),
        }],
        leaves: user.extra_leaf.iter().cloned().collect(),
        remainder_script: remainder.script_pubkey(),
        max_fee: Amount::from_sat(50_000),
        limits: cohort_participant::session::ProposalLimits::default(),
    };
    let mut setup = DriverSetup::new(session, USER_LEAF_KEY_INDEX, exit_csv);
    setup.randomness = randomness;
    setup.caches = Some(caches.clone());
    Ok(setup)
}

/// A simulated user's store: in memory, holding its one deposit.
pub fn user_store(user: &User) -> Result<Arc<MemoryStore>> {
    let store = Arc::new(MemoryStore::new());
    store.put_deposit(&DepositRecord {
        outpoint: user.outpoint,
        txout: user.txout.clone(),
        key_index: 0,
        deposit_csv: user.deposit.csv(),
        status: DepositStatus::Unspent,
    })?;
    Ok(store)
}

/// The participants' randomness, one seeded source each, all from the run's seed on a
/// stream of their own (so the rest of the run draws what it drew before).
#[derive(Debug)]
pub struct ParticipantRandomness(rand::rngs::StdRng);

impl ParticipantRandomness {
    /// The sources of a run seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        ParticipantRandomness(rand::rngs::StdRng::seed_from_u64(seed ^ PARTICIPANT_STREAM))
    }

    /// The next participant's source.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Randomness {
        Randomness::seeded(self.0.gen())
    }
}

/// Mixed into the run's seed for the participants' stream ("particip" in ASCII).
const PARTICIPANT_STREAM: u64 = 0x7061_7274_6963_6970;

/// A duration in whole milliseconds.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn progress_bar(enabled: bool, len: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} finalized  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn phase_name(net: &MemNet) -> String {
    let mut counts = [0usize; 5];
    for b in net.coordinator.batches() {
        let k = match b {
            BatchPhase::Renoncing { .. } => 0,
            BatchPhase::SigningTree { .. } => 1,
            BatchPhase::SigningDeposits { .. } | BatchPhase::Broadcasting { .. } => 2,
            BatchPhase::Finalized { .. } | BatchPhase::Confirmed { .. } => 3,
            BatchPhase::Failed => 4,
        };
        counts[k] += 1;
    }
    format!(
        "batches: {} renonce, {} tree, {} deposits, {} final, {} failed",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    )
}

fn batch_reports(net: &MemNet) -> Vec<BatchReport> {
    let mut out: Vec<BatchReport> = Vec::new();
    for (_, e) in &net.events {
        match e {
            CoordEvent::Proposed { batch, attempt, funding_tx, .. } => {
                let b = *batch as usize;
                if out.len() <= b {
                    out.resize(
                        b + 1,
                        BatchReport { attempts: 0, funding_txid: None, leaves: 0, inputs: 0 },
                    );
                }
                out[b].attempts = *attempt;
                out[b].inputs = funding_tx.input.len();
            }
            CoordEvent::TreeSigned { batch, nodes, .. } => {
                if let Some(r) = out.get_mut(*batch as usize) {
                    r.leaves = count_leaves(nodes);
                }
            }
            CoordEvent::BatchFinalized { batch, txid, attempts, .. } => {
                if let Some(r) = out.get_mut(*batch as usize) {
                    r.funding_txid = Some(txid.to_string());
                    r.attempts = *attempts;
                }
            }
            _ => {}
        }
    }
    out
}

/// The on-chain footprint of every broadcast funding transaction and its signed tree.
fn footprint(net: &MemNet) -> ChainFootprint {
    let mut trees: std::collections::HashMap<u32, &Vec<Transaction>> = Default::default();
    let mut out = ChainFootprint::default();
    for (_, e) in &net.events {
        match e {
            CoordEvent::TreeSigned { batch, nodes, .. } => {
                trees.insert(*batch, nodes);
            }
            CoordEvent::BatchFinalized { batch, txid, .. } => {
                if let (Some(tx), Some(nodes)) = (net.broadcast.get(txid), trees.get(batch)) {
                    out.add(tx, nodes);
                }
            }
            _ => {}
        }
    }
    out
}

/// Leaves of a signed tree (see [`crate::export::leaf_outputs`]).
pub fn count_leaves(nodes: &[Transaction]) -> usize {
    crate::export::leaf_outputs(nodes).len()
}

fn phase_times(net: &MemNet, deposits: u64, started: Instant, done: Instant) -> PhaseTimes {
    // The real instant of the last event of each phase.
    let last = |f: &dyn Fn(&CoordEvent) -> bool| {
        net.events
            .iter()
            .zip(&net.event_wall)
            .filter(|((_, e), _)| f(e))
            .map(|(_, w)| *w)
            .max()
            .unwrap_or(started)
    };
    let t_reg = last(&|e| matches!(e, CoordEvent::Proposed { attempt: 1, .. }));
    let t_tree = last(&|e| matches!(e, CoordEvent::TreeSigned { .. })).max(t_reg);
    let t_dep = last(&|e| matches!(e, CoordEvent::BatchFinalized { .. })).max(t_tree);
    PhaseTimes {
        deposits,
        registration: ms(t_reg.saturating_duration_since(started)),
        tree_signing: ms(t_tree.saturating_duration_since(t_reg)),
        deposit_signing: ms(t_dep.saturating_duration_since(t_tree)),
        confirmation: ms(done.saturating_duration_since(t_dep)),
        exits: 0,
    }
}

fn count_completed(net: &MemNet, users: &[User], faulty: &[bool]) -> Result<usize> {
    let confirmed: std::collections::HashSet<OutPoint> = net
        .broadcast
        .iter()
        .filter(|(txid, _)| net.ledger.confirmations(txid).ok().flatten().is_some_and(|c| c >= 1))
        .flat_map(|(_, tx)| tx.input.iter().map(|i| i.previous_output))
        .collect();
    Ok(users.iter().zip(faulty).filter(|(u, f)| !**f && confirmed.contains(&u.outpoint)).count())
}

/// The safety invariant: every deposit spent by a broadcast funding transaction
/// belongs to a participant that stored its exit paths for that transaction.
fn check_safety(net: &MemNet, users: &[User], faulty: &[bool]) -> Result<()> {
    let owner: std::collections::HashMap<OutPoint, usize> =
        users.iter().enumerate().map(|(i, u)| (u.outpoint, i)).collect();
    for (txid, tx) in &net.broadcast {
        for input in &tx.input {
            let Some(&i) = owner.get(&input.previous_output) else { continue };
            if !net.peers[i].has_paths(txid) && !faulty[i] {
                bail!("user {i}'s deposit was spent by {txid} without its exit paths stored");
            }
        }
    }
    Ok(())
}

/// Writes `batch-K.json` for every funding transaction the round broadcast.
fn export_batches(net: &MemNet, dir: &std::path::Path) -> Result<()> {
    let mut trees: std::collections::HashMap<u32, Vec<Transaction>> = Default::default();
    for (_, e) in &net.events {
        if let CoordEvent::TreeSigned { batch, nodes, .. } = e {
            trees.insert(*batch, nodes.clone());
        }
    }
    let mut docs = Vec::with_capacity(net.broadcast.len());
    for (k, (txid, tx)) in net.broadcast.iter().enumerate() {
        let batch = net
            .events
            .iter()
            .find_map(|(_, e)| match e {
                CoordEvent::BatchFinalized { batch, txid: t, .. } if t == txid => Some(*batch),
                _ => None,
            })
            .unwrap_or(k as u32);
        let nodes = trees.get(&batch).cloned().unwrap_or_default();
        let prevouts = crate::export::ledger_prevouts(&net.ledger, tx)
            .with_context(|| format!("batch {batch}: funding transaction {txid}"))?;
        docs.push((batch, crate::export::batch_json_parts(tx, &prevouts, &nodes)?));
    }
    crate::export::write_batches(dir, &docs)
}

/// What each user's driver stored: the funding txid it saw finalized and its paths.
pub type StoredPaths = Option<(Txid, Vec<ExitPathRecord>)>;

/// The stored paths of the funding transaction a participant saw finalized.
pub fn finalized_paths(store: &dyn ParticipantStore, finalized: Option<Txid>) -> StoredPaths {
    let txid = finalized?;
    let paths: Vec<ExitPathRecord> =
        store.exit_paths().ok()?.into_iter().filter(|p| p.funding_txid == txid).collect();
    (!paths.is_empty()).then_some((txid, paths))
}

/// The stored paths of every participant of the in-memory network.
fn stored_paths(net: &MemNet) -> Vec<StoredPaths> {
    net.peers.iter().map(|p| finalized_paths(p.store.as_ref(), p.finalized)).collect()
}

/// Executes the exits of a sample of honest users from the paths they stored: each
/// node with a CPFP child, one block each, then the leaf's reclaim after `exit_csv`.
pub fn execute_exits<R: Rng>(
    ledger: &Ledger,
    stored: &[StoredPaths],
    users: &[User],
    faulty: &[bool],
    coordinator: &Keypair,
    count: usize,
    rng: &mut R,
) -> Result<Vec<ExitReport>> {
    let candidates: Vec<usize> = (0..users.len())
        .filter(|&i| !faulty[i] && stored.get(i).is_some_and(Option::is_some))
        .collect();
    if candidates.is_empty() || count == 0 {
        return Ok(Vec::new());
    }
    let mut chosen =
        vec![candidates[0], candidates[candidates.len() / 2], candidates[candidates.len() - 1]];
    while chosen.len() < count.min(candidates.len()) {
        chosen.push(candidates[rng.gen_range(0..candidates.len())]);
    }
    chosen.sort_unstable();
    chosen.dedup();
    chosen.truncate(count.max(1));

    let rate = ledger.fee_rate()?;
    let fee_key = Keypair::from_rng(rng);
    let fee_script = p2tr_single(&fee_key);
    let amount = Amount::from_sat(10_000_000);
    let outpoint = ledger.faucet(&fee_script, amount)?;
    let mut fee = FeeInput {
        outpoint,
        txout: TxOut { value: amount, script_pubkey: fee_script },
        key: fee_key,
    };
    let exit_csv = cohort_common::params::DEFAULT_EXIT_CSV;
    let mut pending = Vec::new();
    for &i in &chosen {
        let (_, paths) = stored.get(i).and_then(Option::as_ref).context("no stored paths")?;
        let script =
            DepositScript::virtual_deposit(users[i].key.public, coordinator.public, exit_csv)?;
        let path = paths
            .iter()
            .find(|p| p.leaf_output.script_pubkey == script.script_pubkey())
            .context("no remainder leaf path")?;
        let mut cost = ExitCost::default();
        fee = publish_path(ledger, &path.path, fee, rate, &mut cost)
            .with_context(|| format!("user {i}: publishing its path"))?;
        let report = ExitReport { user: i, nodes: cost.nodes, vbytes: cost.vbytes };
        let last = path.path.last().context("empty path")?;
        let leaf_outpoint = OutPoint { txid: last.compute_txid(), vout: path.vout };
        pending.push((i, script, leaf_outpoint, path.leaf_output.clone(), report));
    }
    ledger.mine(u32::from(exit_csv));
    let mut out = Vec::new();
    for (i, script, outpoint, txout, mut report) in pending {
        let tx =
            reclaim_tx(&script, &users[i].key, outpoint, &txout, p2tr_single(&users[i].key), rate)?;
        ledger.broadcast(&tx).with_context(|| format!("user {i}: reclaiming the leaf"))?;
        report.vbytes += tx.vsize() as u64;
        out.push(report);
    }
    ledger.mine(1);
    Ok(out)
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
