//! `cohort-sim --transport quic`: N participants over real loopback QUIC to one
//! coordinator service in the same process, on the embedded ledger the service serves.
//! Each participant runs the participant's tokio driver ([`Driver::run`], what `cohort
//! join` runs) with an in-memory store.
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
use cohort_common::params::DEFAULT_DEPOSIT_CSV;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, MemoryStore};
use cohort_participant::driver::{spawn_reader, Driver, DriverSetup, Outcome, Progress};
use cohort_participant::session::SharedCaches;
use cohort_participant::store::MemoryStore as ParticipantMemoryStore;
use cohort_transport::{Client, ClientEndpoint, CoordinatorUri, Identity, Limits};

use crate::round::{
    execute_exits, finalized_paths, ms, peak_rss, progress_bar, user_setup, user_store,
    BatchReport, ParticipantRandomness, PhaseTimes, RoundConfig, RoundReport, StoredPaths,
};
use crate::run::fund_users;

/// Client endpoints (UDP sockets) the participants share.
const CLIENT_ENDPOINTS: usize = 16;

/// What one participant saw.
#[derive(Debug, Default)]
struct PeerResult {
    finalized: Option<Txid>,
    confirmed: bool,
    stored: StoredPaths,
    error: Option<String>,
    udp_tx: u64,
    udp_rx: u64,
}

/// Runs one round over QUIC and reports it like the in-memory run.
pub fn run_quic_round(config: &RoundConfig) -> Result<RoundReport> {
    if config.users == 0 {
        bail!("--users must be at least 1");
    }
    if config.fault.is_some() || config.loss > 0.0 {
        bail!("--faults and --loss apply to the in-memory transport only");
    }
    let wall = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let ledger = Arc::new(Ledger::new());
    let coordinator_key = Keypair::from_rng(&mut rng);
    let payout = p2tr_single(&Keypair::from_rng(&mut rng));
    let users = fund_users(&ledger, &mut rng, config.users, &coordinator_key)?;
    let deposits_ms = ms(wall.elapsed());

    let engine =
        config.coordinator_config(payout, Duration::from_secs(120), Duration::from_secs(60));
    let exit_csv = engine.exit_csv;
    let service_config = ServiceConfig {
        listen: "127.0.0.1:0".parse().context("listen address")?,
        engine,
        round_interval: Duration::from_secs(3600),
        limits: Limits::default(),
        confirmation_poll: Duration::from_millis(200),
        network: bitcoin::Network::Regtest,
        deposit_csv: DEFAULT_DEPOSIT_CSV,
        metrics_listen: None,
        admin_socket: None,
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
        for (i, (store, setup)) in participants.into_iter().enumerate() {
            let endpoint = endpoints[i % endpoints.len()].clone();
            let (uri, limits, finalized) = (uri.clone(), limits.clone(), finalized.clone());
            let delay = spread * i as u32;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                participant(store, setup, &endpoint, &uri, &limits, &finalized).await
            }));
        }
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

    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    let completed = results
        .iter()
        .filter(|r| {
            r.confirmed
                && r.finalized.is_some_and(|t| {
                    ledger.confirmations(&t).ok().flatten().is_some_and(|c| c >= 1)
                })
        })
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
    let faulty = vec![false; users.len()];
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
    if !errors.is_empty() {
        eprintln!("{} participants failed; first: {}", errors.len(), errors[0]);
    }
    let wall_ms = ms(wall.elapsed());
    // Measured after the run, so it is not part of the wall time above.
    let ledger_cpu = consensus_cost(&ledger, &store_funding(store.as_ref())?);
    Ok(RoundReport {
        transport: "quic",
        users: config.users,
        completed,
        excluded: config.users - completed,
        faulty: 0,
        batches,
        chain,
        wall_ms,
        phase_ms,
        coordinator_cpu_ms: ms(coordinator_cpu),
        ledger_cpu_ms: ms(ledger_cpu),
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

/// One participant: connect, run the participant's driver to its end, report.
async fn participant(
    store: Arc<ParticipantMemoryStore>,
    setup: DriverSetup,
    endpoint: &ClientEndpoint,
    uri: &CoordinatorUri,
    limits: &Limits,
    finalized: &AtomicUsize,
) -> PeerResult {
    let mut result = PeerResult::default();
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
    let outcome = driver
        .run(&mut send, &mut inbox, |p| {
            if let Progress::Finalized { txid } = p {
                seen = Some(*txid);
                finalized.fetch_add(1, Ordering::Relaxed);
            }
            ControlFlow::Continue(())
        })
        .await;
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
