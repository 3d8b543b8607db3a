//! `cohort-coordinator`: serves Cohort rounds over QUIC (`run`), or prints a commented
//! default configuration (`init-config`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::{Amount, FeeRate, ScriptBuf};
use clap::{Parser, Subcommand};
use cohort_chain_rpc::config::default_rpc_port;
use cohort_chain_rpc::{BitcoindChain, BitcoindConfig, RpcAuth};
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::{FeeSchedule, TreeParams};
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::SqliteStore;
use cohort_transport::{Identity, Limits};
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(name = "cohort-coordinator", about = "Cohort batching coordinator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Print a commented default configuration.
    InitConfig,
}

/// Where the chain comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum ChainKind {
    /// The embedded regtest ledger, served to participants as the dev chain endpoint.
    Dev,
    /// A Bitcoin Core node over JSON-RPC.
    Bitcoind,
}

/// The configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: SocketAddr,
    data_dir: PathBuf,
    dev: bool,
    chain: Option<ChainKind>,
    network: bitcoin::Network,
    /// Empty: `http://127.0.0.1:<the network's default RPC port>`.
    bitcoind_url: String,
    /// Empty: the cookie in `~/.bitcoin` (or `bitcoind_datadir`), unless a user is set.
    bitcoind_cookie: String,
    bitcoind_datadir: String,
    bitcoind_user: String,
    bitcoind_password: String,
    round_interval_secs: u64,
    registration_window_secs: u64,
    phase_timeout_secs: u64,
    ban_secs: u64,
    max_attempts: u8,
    max_registrations: usize,
    radix: u8,
    max_depth: u8,
    fee_rate_sat_per_kwu: u64,
    service_base_sat: u64,
    service_ppm: u32,
    exit_csv: u16,
    deposit_csv: u16,
    max_deposit_csv: u16,
    min_confs: u32,
    safety_margin: u32,
    max_leaves_per_registration: u16,
    max_deposits_per_registration: u16,
    max_batch_weight: u64,
    /// Hex script paid the service fees; empty = P2TR of the coordinator key.
    payout_script_hex: String,
    max_frame: u32,
    max_connections: usize,
    max_messages_per_sec: u32,
    max_handshakes: usize,
    max_proposals_in_flight: usize,
    idle_timeout_secs: u64,
    keep_alive_secs: u64,
    socket_buffer: usize,
}

impl Default for FileConfig {
    fn default() -> Self {
        let engine = CoordinatorConfig::new(ScriptBuf::new());
        let limits = Limits::default();
        FileConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("cohort-coordinator-data"),
            dev: false,
            chain: None,
            network: bitcoin::Network::Regtest,
            bitcoind_url: String::new(),
            bitcoind_cookie: String::new(),
            bitcoind_datadir: String::new(),
            bitcoind_user: String::new(),
            bitcoind_password: String::new(),
            round_interval_secs: 30,
            registration_window_secs: engine.registration_window.as_secs(),
            phase_timeout_secs: engine.phase_timeout.as_secs(),
            ban_secs: engine.ban_duration.as_secs(),
            max_attempts: engine.max_attempts,
            max_registrations: engine.max_registrations,
            radix: engine.tree.radix,
            max_depth: engine.tree.max_depth,
            fee_rate_sat_per_kwu: engine.fees.fee_rate.to_sat_per_kwu(),
            service_base_sat: engine.fees.service_base.to_sat(),
            service_ppm: engine.fees.service_ppm,
            exit_csv: engine.exit_csv,
            deposit_csv: cohort_common::params::DEFAULT_DEPOSIT_CSV,
            max_deposit_csv: engine.max_deposit_csv,
            min_confs: engine.min_confs,
            safety_margin: engine.safety_margin,
            max_leaves_per_registration: engine.max_leaves_per_registration,
            max_deposits_per_registration: engine.max_deposits_per_registration,
            max_batch_weight: engine.max_batch_weight,
            payout_script_hex: String::new(),
            max_frame: limits.max_frame,
            max_connections: limits.max_connections,
            max_messages_per_sec: limits.max_messages_per_sec,
            max_handshakes: limits.max_handshakes,
            max_proposals_in_flight: limits.max_proposals_in_flight,
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            keep_alive_secs: limits.keep_alive.as_secs(),
            socket_buffer: limits.socket_buffer,
        }
    }
}

const COMMENTS: &[(&str, &str)] = &[
    ("listen", "UDP address the QUIC endpoint listens on"),
    (
        "data_dir",
        "identity (tls-cert.der, tls-key.der), key C (coordinator.key), coordinator.sqlite",
    ),
    ("dev", "embedded regtest ledger + dev chain endpoint (the same as chain = \"dev\")"),
    ("chain", "\"dev\" (embedded regtest ledger) or \"bitcoind\" (Bitcoin Core over JSON-RPC)"),
    ("network", "bitcoin, testnet4, signet or regtest: addresses, URIs and the node's chain"),
    ("bitcoind_url", "chain = bitcoind: RPC URL; empty = 127.0.0.1 on the network's default port"),
    (
        "bitcoind_cookie",
        "chain = bitcoind: cookie file; empty = <bitcoind_datadir>/<network>/.cookie",
    ),
    ("bitcoind_datadir", "chain = bitcoind: the node's data directory; empty = ~/.bitcoin"),
    ("bitcoind_user", "chain = bitcoind: RPC user (with bitcoind_password) instead of the cookie"),
    ("bitcoind_password", "chain = bitcoind: RPC password"),
    ("round_interval_secs", "pause between the end of a round and the start of the next"),
    ("registration_window_secs", "how long registration stays open"),
    ("phase_timeout_secs", "deadline of each signing phase"),
    ("ban_secs", "how long a culprit's deposits stay banned"),
    ("max_attempts", "attempts per batch before it gives up"),
    ("max_registrations", "registrations that close a round early"),
    ("radix", "tree radix (2..=16)"),
    ("max_depth", "tree depth limit"),
    ("fee_rate_sat_per_kwu", "funding transaction fee rate"),
    ("service_base_sat", "flat service fee per registration"),
    ("service_ppm", "service fee, parts per million of the deposits"),
    ("exit_csv", "relative timeout of virtual-deposit leaves"),
    ("deposit_csv", "deposit_csv suggested to new participants"),
    ("max_deposit_csv", "largest deposit_csv accepted"),
    ("min_confs", "confirmations a deposit needs"),
    ("safety_margin", "blocks before a deposit's timeout below which it is refused"),
    ("max_leaves_per_registration", "fixed leaves + remainder per registration"),
    ("max_deposits_per_registration", "deposits per registration"),
    ("max_batch_weight", "largest funding transaction weight"),
    ("payout_script_hex", "script paid the service fees; empty = P2TR of the coordinator key"),
    ("max_frame", "largest frame in bytes"),
    ("max_connections", "connections held at once"),
    ("max_messages_per_sec", "frames per second per connection"),
    ("max_handshakes", "TLS handshakes in flight"),
    ("max_proposals_in_flight", "large proposal sends in flight"),
    ("idle_timeout_secs", "a silent connection is closed after this"),
    ("keep_alive_secs", "keep-alive interval"),
    ("socket_buffer", "UDP send/receive buffer requested, bytes"),
];

fn commented_default() -> Result<String> {
    let text = toml::to_string(&FileConfig::default()).context("encoding the default config")?;
    let mut out = String::from("# cohort-coordinator configuration (every key is optional)\n");
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if let Some((_, comment)) = COMMENTS.iter().find(|(k, _)| *k == key) {
            out.push_str(&format!("\n# {comment}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
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

fn service_config(file: &FileConfig, key: &Keypair) -> Result<ServiceConfig> {
    let payout = if file.payout_script_hex.is_empty() {
        p2tr_single(key)
    } else {
        ScriptBuf::from_hex(&file.payout_script_hex).context("payout_script_hex is not hex")?
    };
    let mut engine = CoordinatorConfig::new(payout);
    engine.tree = TreeParams { radix: file.radix, max_depth: file.max_depth };
    engine.fees = FeeSchedule {
        fee_rate: FeeRate::from_sat_per_kwu(file.fee_rate_sat_per_kwu),
        service_base: Amount::from_sat(file.service_base_sat),
        service_ppm: file.service_ppm,
    };
    engine.exit_csv = file.exit_csv;
    engine.max_deposit_csv = file.max_deposit_csv;
    engine.min_confs = file.min_confs;
    engine.safety_margin = file.safety_margin;
    engine.max_leaves_per_registration = file.max_leaves_per_registration;
    engine.max_deposits_per_registration = file.max_deposits_per_registration;
    engine.max_batch_weight = file.max_batch_weight;
    engine.registration_window = Duration::from_secs(file.registration_window_secs);
    engine.max_registrations = file.max_registrations;
    engine.phase_timeout = Duration::from_secs(file.phase_timeout_secs);
    engine.max_attempts = file.max_attempts;
    engine.ban_duration = Duration::from_secs(file.ban_secs);
    engine.validate(key.public).context("invalid config")?;
    Ok(ServiceConfig {
        listen: file.listen,
        engine,
        round_interval: Duration::from_secs(file.round_interval_secs),
        limits: Limits {
            max_frame: file.max_frame,
            max_connections: file.max_connections,
            max_messages_per_sec: file.max_messages_per_sec,
            max_handshakes: file.max_handshakes,
            max_proposals_in_flight: file.max_proposals_in_flight,
            idle_timeout: Duration::from_secs(file.idle_timeout_secs),
            keep_alive: Duration::from_secs(file.keep_alive_secs),
            socket_buffer: file.socket_buffer,
            // Only clients wait for handshakes; a coordinator never connects out.
            ..Limits::default()
        },
        confirmation_poll: Duration::from_secs(1),
        network: file.network,
        deposit_csv: file.deposit_csv,
    })
}

/// The chain backend the file asks for. Refuses a setting that would do nothing: a
/// `bitcoind_*` setting with the dev chain, or the dev chain on another network.
fn chain_kind(file: &FileConfig) -> Result<ChainKind> {
    let kind = match (file.dev, file.chain) {
        (true, Some(ChainKind::Bitcoind)) => {
            bail!("dev = true and chain = \"bitcoind\" contradict each other")
        }
        (true, _) | (false, Some(ChainKind::Dev)) => ChainKind::Dev,
        (false, Some(ChainKind::Bitcoind)) => ChainKind::Bitcoind,
        (false, None) => {
            bail!("no chain backend: run with --dev (embedded regtest ledger) or --chain bitcoind")
        }
    };
    if kind == ChainKind::Dev {
        if file.network != bitcoin::Network::Regtest {
            bail!(
                "the dev chain is regtest: network = {} needs chain = \"bitcoind\"",
                file.network
            );
        }
        let set = [
            ("bitcoind_url", &file.bitcoind_url),
            ("bitcoind_cookie", &file.bitcoind_cookie),
            ("bitcoind_datadir", &file.bitcoind_datadir),
            ("bitcoind_user", &file.bitcoind_user),
            ("bitcoind_password", &file.bitcoind_password),
        ];
        if let Some((name, _)) = set.iter().find(|(_, v)| !v.is_empty()) {
            bail!("{name} is set but the chain is the dev ledger: it would do nothing");
        }
    }
    Ok(kind)
}

/// The bitcoind client configuration the file describes.
fn bitcoind_config(file: &FileConfig) -> Result<BitcoindConfig> {
    let network = file.network;
    let url = if file.bitcoind_url.is_empty() {
        format!("http://127.0.0.1:{}", default_rpc_port(network))
    } else {
        file.bitcoind_url.clone()
    };
    let auth = match (file.bitcoind_user.is_empty(), file.bitcoind_password.is_empty()) {
        (false, false) => {
            if !file.bitcoind_cookie.is_empty() {
                bail!("bitcoind_cookie and bitcoind_user are both set: choose one");
            }
            RpcAuth::UserPass {
                user: file.bitcoind_user.clone(),
                password: file.bitcoind_password.clone(),
            }
        }
        (true, true) if !file.bitcoind_cookie.is_empty() => {
            RpcAuth::Cookie(PathBuf::from(&file.bitcoind_cookie))
        }
        (true, true) => {
            let datadir = if file.bitcoind_datadir.is_empty() {
                let home =
                    std::env::var_os("HOME").context("HOME is not set: set bitcoind_datadir")?;
                PathBuf::from(home).join(".bitcoin")
            } else {
                PathBuf::from(&file.bitcoind_datadir)
            };
            RpcAuth::cookie_in(&datadir, network)
        }
        _ => bail!("bitcoind_user and bitcoind_password go together"),
    };
    Ok(BitcoindConfig::new(url, auth, network))
}

async fn run(mut file: FileConfig, json: bool) -> Result<()> {
    let kind = chain_kind(&file)?;
    std::fs::create_dir_all(&file.data_dir)
        .with_context(|| format!("creating {}", file.data_dir.display()))?;
    let identity = Identity::load_or_create(&file.data_dir)?;
    let key = load_or_create_key(&file.data_dir)?;
    let config = service_config(&file, &key)?;
    let store = Arc::new(SqliteStore::open(file.data_dir.join("coordinator.sqlite"))?);
    let chain = match kind {
        ChainKind::Dev => ChainBackend::Dev(Arc::new(Ledger::new())),
        ChainKind::Bitcoind => {
            let rpc = bitcoind_config(&file)?;
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
    let service = CoordinatorService::start(config, &identity, key, store, chain)?;
    let addr = service.local_addr()?;
    file.listen = addr;
    let host =
        if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let uri = service.uri(&host)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "uri": uri.to_string(),
                "listen": addr.to_string(),
                "chain": kind,
                "network": file.network.to_string(),
            })
        );
    } else {
        println!("coordinator listening: {uri}");
    }
    tokio::signal::ctrl_c().await.context("waiting for ctrl-c")?;
    tracing::info!("shutting down");
    service.shutdown("coordinator shutting down").await;
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::InitConfig => {
            print!("{}", commented_default()?);
            Ok(())
        }
        Command::Run { config, listen, data_dir, dev, chain, network, bitcoind_url, json } => {
            let mut file = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
                }
                None => FileConfig::default(),
            };
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
            runtime.block_on(run(file, json))
        }
    }
}
