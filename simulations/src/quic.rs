//! `cohort-sim --transport quic`: N participants over real loopback QUIC to one
//! coordinator service in the same process, on the embedded ledger the service serves.
//! Each participant runs the participant's tokio driver ([`Driver::run`], what `cohort
//! join` runs) with an in-memory store; a faulty one sends through a `faults` sink that
//! misbehaves as the in-memory network's faults do.
//!
//! The coordinator service runs on its own tokio runtime (threads `coord-rt`), its
//! engine on the `cohort-engine` thread with its own rayon pool (`coord-rayon-*`), so its
//! CPU time is told apart from the participants' (runtime `part-rt`). Participants share
//! a few client endpoints (UDP sockets) and spread their connects.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::Txid;
use rand::SeedableRng;

use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, MemoryStore, RegistrationStatus};
use cohort_participant::driver::{
    spawn_reader, Driver, DriverError, DriverSetup, LinkError, Outcome, Progress,
};
use cohort_participant::session::SharedCaches;
use cohort_participant::store::MemoryStore as ParticipantMemoryStore;
use cohort_participant::store::ParticipantStore;
use cohort_transport::{Client, ClientEndpoint, CoordinatorUri, Identity, Limits};

use crate::memnet::Fault;
use crate::round::{
    execute_exits, finalized_paths, ms, peak_rss, progress_bar, user_setup, user_store,
    BatchReport, ParticipantRandomness, PhaseTimes, RoundConfig, RoundReport, StoredPaths,
};
use crate::run::fund_users;

mod faults;
use faults::{round_over, FaultySink, HonestLeft};

/// Client endpoints (UDP sockets) the participants share.
const CLIENT_ENDPOINTS: usize = 16;

/// How long the coordinator waits for a phase's signatures in an honest run (it never
/// expires there).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// With faults, a silent participant is excluded after this much per participant (the
/// honest ones of a large run need it on a small machine), at least
/// [`MIN_PHASE_TIMEOUT_WITH_FAULTS`] and at most [`PHASE_TIMEOUT`].
const PHASE_TIMEOUT_PER_USER: Duration = Duration::from_millis(30);
/// The shortest phase timeout with faults.
const MIN_PHASE_TIMEOUT_WITH_FAULTS: Duration = Duration::from_secs(5);

/// The coordinator's phase timeout for a run of `users`, `faulty` or not.
fn phase_timeout(users: usize, faulty: bool) -> Duration {
    if !faulty {
        return PHASE_TIMEOUT;
    }
    let scaled = PHASE_TIMEOUT_PER_USER.saturating_mul(u32::try_from(users).unwrap_or(u32::MAX));
    scaled.clamp(MIN_PHASE_TIMEOUT_WITH_FAULTS, PHASE_TIMEOUT)
}

/// What one participant saw.
#[derive(Debug, Default)]
struct PeerResult {
    finalized: Option<Txid>,
    confirmed: bool,
    stored: StoredPaths,
    /// Its store, for the safety check.
    store: Option<Arc<ParticipantMemoryStore>>,
    error: Option<String>,
    udp_tx: u64,
    udp_rx: u64,
}

/// Runs one round over QUIC and reports it like the in-memory run.
pub fn run_quic_round(config: &RoundConfig) -> Result<RoundReport> {
    if config.users == 0 {
        bail!("--users must be at least 1");
    }
    if config.loss > 0.0 {
        bail!(
            "--loss applies to the in-memory transport only: QUIC retransmits what the \
             network loses"
        );
    }
    let wall = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let ledger = Arc::new(Ledger::new());
    let coordinator_key = Keypair::from_rng(&mut rng);
    let payout = p2tr_single(&Keypair::from_rng(&mut rng));
    let users = fund_users(&ledger, &mut rng, config.users, &coordinator_key)?;
    let deposits_ms = ms(wall.elapsed());
    let faults = crate::round::draw_faults(config, &mut rng);
    let faulty: Vec<bool> = faults.iter().map(Option::is_some).collect();

    let phase = phase_timeout(config.users, faulty.contains(&true));
    let engine = config.coordinator_config(payout, Duration::from_secs(120), phase);
    let exit_csv = engine.exit_csv;
    let service_config = ServiceConfig {
        round_interval: Duration::from_secs(3600),
        confirmation_poll: Duration::from_millis(200),
        ..ServiceConfig::local(engine)
    };

    let coord_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coord-rt")
        .enable_all()
        .build()?;
    let part_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("part-rt")
        .enable_all()
        .build()?;
    let identity = Identity::generate()?;
    let store: Arc<dyn CoordinatorStore> = Arc::new(MemoryStore::new());
    let service = coord_rt.block_on(async {
        CoordinatorService::start(
            service_config,
            &identity,
            coordinator_key.clone(),
            store.clone(),
            ChainBackend::Dev(ledger.clone()),
        )
    })?;
    let uri = service.uri("127.0.0.1")?;

    let caches = Arc::new(SharedCaches::new());
    let mut secrets = ParticipantRandomness::new(config.seed);
    let participants: Vec<(Arc<ParticipantMemoryStore>, DriverSetup)> = users
        .iter()
        .map(|user| {
            let setup = user_setup(user, &coordinator_key, exit_csv, &caches, secrets.next())?;
            Ok((user_store(user)?, setup))
        })
        .collect::<Result<_>>()?;
    // The faulty participants' tasks end when the last honest one's does.
    let (over_tx, over) = tokio::sync::watch::channel(false);
    let honest_left = Arc::new(HonestLeft(over_tx));

    let started = Instant::now();
    let finalized = Arc::new(AtomicUsize::new(0));
    let bar = progress_bar(config.progress, config.users as u64);
    let results: Vec<PeerResult> = part_rt.block_on(async {
        let limits = Limits::default();
        let target = "127.0.0.1:1".parse().map_err(|_| anyhow!("address"))?;
        let endpoints: Vec<ClientEndpoint> = (0..CLIENT_ENDPOINTS.min(config.users))
            .map(|_| ClientEndpoint::bind_for(target, &limits))
            .collect::<Result<_, _>>()?;
        // Spread the connects over ~0.35 ms per participant (3.5 s for 10,000).
        let spread = Duration::from_micros(350);
        let mut tasks = Vec::with_capacity(participants.len());
        for (i, ((store, setup), fault)) in participants.into_iter().zip(&faults).enumerate() {
            let endpoint = endpoints[i % endpoints.len()].clone();
            let (uri, limits, finalized) = (uri.clone(), limits.clone(), finalized.clone());
            let delay = spread * i as u32;
            let link = Link { fault: *fault, over: over.clone() };
            let honest = fault.is_none().then(|| honest_left.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let result =
                    participant(store, setup, &endpoint, &uri, &limits, &finalized, link).await;
                drop(honest);
                result
            }));
        }
        drop(honest_left);
        let mut results = Vec::with_capacity(tasks.len());
        let mut pending = tasks.into_iter();
        for task in pending.by_ref() {
            if let Some(bar) = &bar {
                bar.set_position(finalized.load(Ordering::Relaxed) as u64);
            }
            results.push(task.await.unwrap_or_else(|e| PeerResult {
                error: Some(format!("task: {e}")),
                ..PeerResult::default()
            }));
        }
        Ok::<_, anyhow::Error>(results)
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let engine_done = Instant::now();
    let coordinator_cpu = thread_cpu(&["cohort-engine", "coord-rayon", "coord-rt"]);
    coord_rt.block_on(service.shutdown("simulation over"));

    let tally = tally(&results, &faulty, &ledger);
    check_safety(store.as_ref(), &users, &faulty, &results)?;
    let excluded = store
        .registrations_of_round(1)?
        .iter()
        .filter(|r| r.status == RegistrationStatus::Excluded)
        .count();
    let batches = batch_reports(store.as_ref())?;
    if let Some(dir) = &config.export {
        export_batches(store.as_ref(), &ledger, dir)?;
    }
    let mut chain = crate::round::ChainFootprint::default();
    for record in store.batches_of_round(1)? {
        let signed = ledger.transaction(&record.funding_tx.compute_txid());
        if let (Some(tx), Some(nodes)) = (signed, store.signed_tree(1, record.batch)?) {
            if matches!(
                record.status,
                BatchStatus::Finalized { .. } | BatchStatus::Confirmed { .. }
            ) {
                chain.add(&tx, &nodes);
            }
        }
    }
    let udp_rx: u64 = results.iter().map(|r| r.udp_rx).sum();
    let udp_tx: u64 = results.iter().map(|r| r.udp_tx).sum();
    let stored: Vec<StoredPaths> = results.into_iter().map(|r| r.stored).collect();
    let exit_start = Instant::now();
    let exits =
        execute_exits(&ledger, &stored, &users, &faulty, &coordinator_key, config.exits, &mut rng)?;
    let phase_ms = PhaseTimes {
        deposits: deposits_ms,
        registration: 0,
        tree_signing: 0,
        deposit_signing: ms(engine_done.saturating_duration_since(started)),
        confirmation: 0,
        exits: ms(exit_start.elapsed()),
    };
    if let Some(first) = tally.errors.first() {
        eprintln!("{} participants failed; first: {first}", tally.errors.len());
    }
    let wall_ms = ms(wall.elapsed());
    // Measured after the run, so it is not part of the wall time above.
    let ledger_cpu = consensus_cost(&ledger, &store_funding(store.as_ref())?);
    Ok(RoundReport {
        transport: "quic",
        users: config.users,
        completed: tally.completed,
        excluded,
        faulty: faulty.iter().filter(|f| **f).count(),
        batches,
        chain,
        wall_ms,
        phase_ms,
        coordinator_cpu_ms: ms(coordinator_cpu),
        ledger_cpu_ms: ms(ledger_cpu),
        participant_cpu_ms: None,
        messages_to_participants: 0,
        messages_from_participants: 0,
        bytes_to_participants: udp_rx,
        bytes_from_participants: udp_tx,
        lost_messages: 0,
        simulated_ms: 0,
        peak_rss_bytes: peak_rss(),
        exits,
        timeline: None,
    })
}

/// What the honest participants saw.
struct Tally {
    /// Honest participants whose batch confirmed.
    completed: usize,
    /// The honest participants' errors (a faulty one's driver ends in one by design).
    errors: Vec<String>,
}

/// Counts what the honest participants saw, by `results[i]` and `faulty[i]`.
fn tally(results: &[PeerResult], faulty: &[bool], ledger: &Ledger) -> Tally {
    let honest = || results.iter().zip(faulty).filter(|(_, f)| !**f).map(|(r, _)| r);
    let confirmed = |t: &Txid| ledger.confirmations(t).ok().flatten().is_some_and(|c| c >= 1);
    Tally {
        completed: honest()
            .filter(|r| r.confirmed && r.finalized.is_some_and(|t| confirmed(&t)))
            .count(),
        errors: honest().filter_map(|r| r.error.clone()).collect(),
    }
}

/// How a participant's task misbehaves, and when the round is over for a faulty one.
struct Link {
    fault: Option<Fault>,
    over: tokio::sync::watch::Receiver<bool>,
}

/// One participant: connect, run the participant's driver to its end (a faulty one: its
/// fault's end, or the round's), report.
async fn participant(
    store: Arc<ParticipantMemoryStore>,
    setup: DriverSetup,
    endpoint: &ClientEndpoint,
    uri: &CoordinatorUri,
    limits: &Limits,
    finalized: &AtomicUsize,
    link: Link,
) -> PeerResult {
    let mut result = PeerResult { store: Some(store.clone()), ..PeerResult::default() };
    let client = match Client::connect_via(endpoint, uri, limits).await {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("connect: {e}"));
            return result;
        }
    };
    let (mut send, recv) = match client.open_session().await {
        Ok(pair) => pair,
        Err(e) => {
            result.error = Some(format!("session: {e}"));
            return result;
        }
    };
    let (mut inbox, reader) = spawn_reader(recv);
    let driver = Driver::with_setup(store.clone(), setup);
    let mut seen = None;
    let mut sink = FaultySink { stream: &mut send, client: &client, fault: link.fault };
    let run = driver.run(&mut sink, &mut inbox, |p| {
        if let Progress::Finalized { txid } = p {
            seen = Some(*txid);
            finalized.fetch_add(1, Ordering::Relaxed);
        }
        ControlFlow::Continue(())
    });
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = round_over(link.over), if link.fault.is_some() => {
            Err(DriverError::Link(LinkError::ChannelClosed))
        }
    };
    result.finalized = seen;
    match outcome {
        Ok(Outcome::Confirmed { .. }) => result.confirmed = true,
        Ok(other) => result.error = Some(format!("{other:?}")),
        Err(e) => result.error = Some(format!("driver: {e}")),
    }
    result.stored = finalized_paths(store.as_ref(), result.finalized);
    let stats = client.connection.stats();
    result.udp_tx = stats.udp_tx.bytes;
    result.udp_rx = stats.udp_rx.bytes;
    client.close("done");
    reader.abort();
    result
}

/// Writes `batch-K.json` for every batch the service finalized: the funding transaction
/// as the ledger accepted it (signed), its prevouts, and the signed tree the service
/// stored.
fn export_batches(store: &dyn CoordinatorStore, ledger: &Ledger, dir: &Path) -> Result<()> {
    let mut docs = Vec::new();
    for record in store.batches_of_round(1)? {
        if !matches!(record.status, BatchStatus::Finalized { .. } | BatchStatus::Confirmed { .. }) {
            continue;
        }
        let batch = record.batch;
        let txid = record.funding_tx.compute_txid();
        let funding = ledger.transaction(&txid).with_context(|| {
            format!("batch {batch}: funding transaction {txid} not on the ledger")
        })?;
        let nodes = store
            .signed_tree(1, batch)?
            .with_context(|| format!("batch {batch}: the service stored no signed tree"))?;
        let prevouts = crate::export::ledger_prevouts(ledger, &funding)
            .with_context(|| format!("batch {batch}: funding transaction {txid}"))?;
        docs.push((batch, crate::export::batch_json_parts(&funding, &prevouts, &nodes)?));
    }
    crate::export::write_batches(dir, &docs)
}

/// The safety invariant, as the in-memory run checks it: every deposit spent by a
/// funding transaction the service finalized belongs to a participant that stored its
/// exit paths for that transaction (a faulty one aside).
fn check_safety(
    store: &dyn CoordinatorStore,
    users: &[crate::local::User],
    faulty: &[bool],
    results: &[PeerResult],
) -> Result<()> {
    let owner: std::collections::HashMap<bitcoin::OutPoint, usize> =
        users.iter().enumerate().map(|(i, u)| (u.outpoint, i)).collect();
    for funding in store_funding(store)? {
        let txid = funding.compute_txid();
        for input in &funding.input {
            let Some(&i) = owner.get(&input.previous_output) else { continue };
            let stored = results[i].store.as_ref().and_then(|s| s.exit_paths().ok());
            let has_paths = stored.is_some_and(|p| p.iter().any(|p| p.funding_txid == txid));
            if !has_paths && !faulty[i] {
                bail!("user {i}'s deposit was spent by {txid} without its exit paths stored");
            }
        }
    }
    Ok(())
}

/// The funding transactions the service broadcast, as stored.
fn store_funding(store: &dyn CoordinatorStore) -> Result<Vec<bitcoin::Transaction>> {
    Ok(store
        .batches_of_round(1)?
        .into_iter()
        .filter(|b| {
            matches!(b.status, BatchStatus::Finalized { .. } | BatchStatus::Confirmed { .. })
        })
        .map(|b| b.funding_tx)
        .collect())
}

/// CPU time the ledger's libbitcoinkernel checks of these transactions take, measured
/// again here (the service ran them on its engine thread, mixed with its own work).
fn consensus_cost(ledger: &Ledger, txs: &[bitcoin::Transaction]) -> Duration {
    let before = crate::memnet::process_cpu();
    for stored in txs {
        // The stored copy is unsigned; check the one the ledger accepted.
        let Some(tx) = ledger.transaction(&stored.compute_txid()) else { continue };
        let spent: Option<Vec<bitcoin::TxOut>> = tx
            .input
            .iter()
            .map(|i| {
                ledger
                    .transaction(&i.previous_output.txid)
                    .and_then(|t| t.output.get(i.previous_output.vout as usize).cloned())
            })
            .collect();
        if let Some(spent) = spent {
            let _ = cohort_common::consensus::verify_tx(&tx, &spent);
        }
    }
    crate::memnet::process_cpu().saturating_sub(before)
}

fn batch_reports(store: &dyn CoordinatorStore) -> Result<Vec<BatchReport>> {
    let mut out: Vec<BatchReport> = Vec::new();
    for record in store.batches_of_round(1)? {
        let b = record.batch as usize;
        if out.len() <= b {
            out.resize(
                b + 1,
                BatchReport { attempts: 0, funding_txid: None, leaves: 0, inputs: 0 },
            );
        }
        let entry = &mut out[b];
        if record.attempt >= entry.attempts {
            entry.attempts = record.attempt;
            entry.inputs = record.funding_tx.input.len();
            entry.funding_txid = match record.status {
                BatchStatus::Finalized { txid } => Some(txid.to_string()),
                BatchStatus::Confirmed { .. } => Some(record.funding_tx.compute_txid().to_string()),
                _ => None,
            };
            if let Some(nodes) = store.signed_tree(1, record.batch)? {
                entry.leaves = crate::round::count_leaves(&nodes);
            }
        }
    }
    Ok(out)
}

/// CPU time of this process's threads whose names start with one of `prefixes`.
fn thread_cpu(prefixes: &[&str]) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        if !prefixes.iter().any(|p| name.trim_end().starts_with(p)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(total)
}
