//! `cohort-coordinator`: serves Cohort rounds over QUIC (`run`), asks a running one over
//! its admin socket (`admin`), or prints a commented default configuration (`init-config`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cohort_chain_rpc::BitcoindChain;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_coordinator::admin::{self, AdminRequest, AdminResponse};
use cohort_coordinator::config_file::{commented_default, ChainKind, FileConfig};
use cohort_coordinator::service::{ChainBackend, CoordinatorService};
use cohort_coordinator::store::SqliteStore;
use cohort_transport::Identity;

#[derive(Debug, Parser)]
#[command(name = "cohort-coordinator", about = "Cohort batching coordinator", version)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for collectors (one JSON object per
    /// line: `timestamp`, `level`, `target`, `fields.message` and the event's fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve rounds until interrupted (Ctrl-C).
    Run {
        /// TOML configuration file (see `init-config`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (overrides the file).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory: identity, key and store (overrides the file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Run the embedded regtest ledger and serve the dev chain endpoint (the same as
        /// `--chain dev`).
        #[arg(long)]
        dev: bool,
        /// Chain backend: `dev` (embedded regtest ledger) or `bitcoind` (a Bitcoin Core
        /// node over JSON-RPC; see `bitcoind_*` and `network` in `init-config`).
        #[arg(long, value_enum)]
        chain: Option<ChainKind>,
        /// The network of addresses and of the node (overrides the file).
        #[arg(long)]
        network: Option<bitcoin::Network>,
        /// bitcoind's JSON-RPC URL (overrides the file).
        #[arg(long)]
        bitcoind_url: Option<String>,
        /// Print the start-up line as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running coordinator (over the admin socket of its data directory).
    Admin {
        /// The coordinator's configuration file (for `data_dir` and `admin_socket`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The coordinator's data directory (overrides the file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The admin socket (overrides the file and the data directory).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print a commented default configuration.
    InitConfig,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Mode, round, batches, peers and bans now.
    Status,
    /// The latest rounds, newest first.
    Rounds {
        /// How many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=admin::MAX_ROUNDS_LISTED as u64))]
        limit: u64,
    },
    /// One round: registrations and every attempt of every batch.
    Round {
        /// The round number.
        round: u64,
        /// Instead, write the round's timeline (batches as rows, phases as bars, retries
        /// and exclusions marked) to this SVG file; kept for the last rounds this process
        /// ran.
        #[arg(long, value_name = "FILE.svg")]
        timeline: Option<PathBuf>,
    },
    /// One batch: ROUND:BATCH (as `admin round` lists them).
    Batch {
        /// ROUND:BATCH.
        id: BatchId,
    },
    /// The deposits banned now.
    Bans,
    /// The latest co-signed cooperative withdrawals, newest first.
    Withdrawals {
        /// How many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=admin::MAX_ROUNDS_LISTED as u64))]
        limit: u64,
    },
    /// Lift a deposit's ban (TXID:VOUT).
    Unban {
        /// The banned deposit.
        outpoint: bitcoin::OutPoint,
    },
    /// Finish the running round, open no new one, then exit.
    Drain,
    /// Open no new round until `resume`.
    Pause,
    /// Open rounds again.
    Resume,
}

/// A batch of a round, written ROUND:BATCH.
#[derive(Debug, Clone, Copy)]
struct BatchId {
    round: u64,
    batch: u32,
}

impl std::str::FromStr for BatchId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (round, batch) = s.split_once(':').ok_or("expected ROUND:BATCH, e.g. 12:0")?;
        Ok(BatchId {
            round: round.parse().map_err(|e| format!("round {round:?}: {e}"))?,
            batch: batch.parse().map_err(|e| format!("batch {batch:?}: {e}"))?,
        })
    }
}

impl AdminCommand {
    fn request(&self) -> AdminRequest {
        match *self {
            AdminCommand::Status => AdminRequest::Status,
            AdminCommand::Rounds { limit } => AdminRequest::Rounds { limit: limit as usize },
            AdminCommand::Round { round, timeline: None } => AdminRequest::Round { round },
            AdminCommand::Round { round, timeline: Some(_) } => AdminRequest::Timeline { round },
            AdminCommand::Batch { id } => AdminRequest::Batch { round: id.round, batch: id.batch },
            AdminCommand::Bans => AdminRequest::Bans,
            AdminCommand::Withdrawals { limit } => {
                AdminRequest::Withdrawals { limit: limit as usize }
            }
            AdminCommand::Unban { outpoint } => AdminRequest::Unban { outpoint },
            AdminCommand::Drain => AdminRequest::Drain,
            AdminCommand::Pause => AdminRequest::Pause,
            AdminCommand::Resume => AdminRequest::Resume,
        }
    }
}

/// How long `admin` waits for an answer.
const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends one admin request; prints the answer; a refused request exits 1.
fn admin(socket: &Path, command: &AdminCommand, json: bool) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let mut answer = runtime.block_on(admin::request(socket, &command.request(), ADMIN_TIMEOUT))?;
    if let (AdminCommand::Round { round, timeline: Some(path) }, AdminResponse::Timeline(svg)) =
        (command, &answer)
    {
        std::fs::write(path, svg)
            .with_context(|| format!("writing the timeline to {}", path.display()))?;
        answer =
            AdminResponse::Done(format!("round {round}'s timeline written to {}", path.display()));
    }
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print!("{answer}");
    }
    Ok(match answer {
        AdminResponse::Error(_) => std::process::ExitCode::FAILURE,
        _ => std::process::ExitCode::SUCCESS,
    })
}

fn load_or_create_key(dir: &Path) -> Result<Keypair> {
    let path = dir.join("coordinator.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let secret: bitcoin::secp256k1::SecretKey =
            text.trim().parse().with_context(|| format!("invalid key in {}", path.display()))?;
        return Ok(Keypair::from_secret(secret));
    }
    let key = Keypair::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(hex::encode(key.secret.secret_bytes()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

async fn run(mut file: FileConfig, json: bool) -> Result<()> {
    // Everything the file says is checked before anything is written or bound.
    file.check().context("invalid config")?;
    let kind = file.chain_kind()?;
    let rpc = match kind {
        ChainKind::Bitcoind => {
            Some(file.bitcoind_config(std::env::var_os("HOME").map(PathBuf::from))?)
        }
        ChainKind::Dev => None,
    };
    // A taken port is reported before a first run writes its identity and key.
    std::net::UdpSocket::bind(file.listen)
        .with_context(|| format!("cannot listen on {}", file.listen))?;
    std::fs::create_dir_all(&file.data_dir)
        .with_context(|| format!("creating {}", file.data_dir.display()))?;
    let identity = Identity::load_or_create(&file.data_dir)?;
    let key = load_or_create_key(&file.data_dir)?;
    let config = file.service_config(&key)?;
    let store = Arc::new(SqliteStore::open(file.data_dir.join("coordinator.sqlite"))?);
    let chain = match rpc {
        None => ChainBackend::Dev(Arc::new(Ledger::new())),
        Some(rpc) => {
            let url = rpc.url.clone();
            // Checks the network, sync state and version; blocking, so off the runtime.
            let node = tokio::task::spawn_blocking(move || BitcoindChain::connect(rpc))
                .await
                .context("connecting to bitcoind")?
                .with_context(|| format!("bitcoind at {url}"))?;
            tracing::info!(%url, network = %file.network, "chain: bitcoind");
            ChainBackend::External(Arc::new(node))
        }
    };
    let signals = Signals::install()?;
    let service = CoordinatorService::start(config, &identity, key, store, chain)?;
    let addr = service.local_addr()?;
    file.listen = addr;
    let host =
        if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let uri = service.uri(&host)?;
    let dev_rpc = service.dev_rpc_addr().map(|a| format!("http://{host}:{}", a.port()));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "uri": uri.to_string(),
                "listen": addr.to_string(),
                "chain": kind,
                "network": file.network.to_string(),
                "dev_chain_rpc": dev_rpc,
            })
        );
    } else {
        let dev_line = dev_rpc
            .map(|url| format!("dev chain (bitcoind JSON-RPC, any credentials): {url}\n"))
            .unwrap_or_default();
        // One write (`println!` writes piece by piece): a reader may close the pipe after
        // the first line, and a closed stdout must not stop the service.
        let text = format!("coordinator listening: {uri}\n{dev_line}");
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
    let grace = file.shutdown_grace();
    let mut signals = signals;
    let first = tokio::select! {
        signal = signals.recv() => signal,
        () = service.drained() => {
            // `admin drain`: the last round is done.
            service.shutdown("coordinator drained").await;
            tracing::info!("drained; shut down");
            return Ok(());
        }
    };
    if !grace.is_zero() {
        tracing::info!(
            signal = first,
            grace_secs = grace.as_secs(),
            "draining before shutdown (a second signal stops at once)"
        );
        service.drain();
        tokio::select! {
            () = service.drained() => tracing::info!("drained"),
            () = tokio::time::sleep(grace) => tracing::warn!(grace_secs = grace.as_secs(), "the running round did not finish within the grace period"),
            signal = signals.recv() => tracing::warn!(signal, "second signal: stopping now"),
        }
    }
    tracing::info!(signal = first, "shutting down");
    service.shutdown("coordinator shutting down").await;
    Ok(())
}

/// The handlers of SIGINT (Ctrl-C) and SIGTERM (what service managers send), installed
/// before the start-up line so that a signal right after it is not lost.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

fn main() -> Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    match cli.command {
        Command::InitConfig => {
            print!("{}", commented_default()?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Admin { config, data_dir, socket, json, command } => {
            let socket = match socket {
                Some(socket) => socket,
                None => {
                    let mut file = load_config(config.as_deref())?;
                    if let Some(dir) = data_dir {
                        file.data_dir = dir;
                    }
                    file.admin_socket()
                }
            };
            admin(&socket, &command, json)
        }
        Command::Run { config, listen, data_dir, dev, chain, network, bitcoind_url, json } => {
            let mut file = load_config(config.as_deref())?;
            if let Some(listen) = listen {
                file.listen = listen;
            }
            if let Some(dir) = data_dir {
                file.data_dir = dir;
            }
            file.dev |= dev;
            if chain.is_some() {
                file.chain = chain;
            }
            if let Some(network) = network {
                file.network = network;
            }
            if let Some(url) = bitcoind_url {
                file.bitcoind_url = url;
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(run(file, json))?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// The configuration file at `path` (none: the defaults), with the environment's overrides.
fn load_config(path: Option<&Path>) -> Result<FileConfig> {
    let (text, source) = match path {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (String::new(), "the defaults".to_owned()),
    };
    FileConfig::load(&text, std::env::vars())
        .with_context(|| format!("configuration from {source}"))
}
