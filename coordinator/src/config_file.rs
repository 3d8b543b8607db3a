//! The coordinator's configuration file: its keys and defaults, environment overrides,
//! the check of every key against its allowed range, and what the file builds (the
//! service configuration, the chain backend choice, the bitcoind client settings).
//!
//! Precedence, lowest first: built-in defaults, the TOML file, environment variables
//! `COHORT_COORDINATOR_<KEY>` (the key in upper case; the value in TOML syntax, a bare
//! word read as a string), then the command line. [`FileConfig::check`] runs before
//! anything is written or bound, and names the key of every refusal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitcoin::{Amount, FeeRate, ScriptBuf};
use cohort_chain_rpc::config::default_rpc_port;
use cohort_chain_rpc::{BitcoindConfig, RpcAuth};
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::params::{
    FeeSchedule, TreeParams, MAX_BLOCKS_SETTING, MAX_DEPOSIT_CSV, MAX_DEPTH_LIMIT,
    MAX_PER_REGISTRATION, MAX_WINDOW_MS, MIN_BATCH_WEIGHT, MIN_FEE_RATE_SAT_KWU, RADIX_RANGE,
};
use cohort_common::standard::MAX_STANDARD_WEIGHT;
use cohort_transport::Limits;
use serde::{Deserialize, Serialize};

use crate::engine::CoordinatorConfig;
use crate::service::ServiceConfig;

/// Prefix of the environment variables that override file keys.
pub const ENV_PREFIX: &str = "COHORT_COORDINATOR_";

/// Why a configuration was refused; every variant names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{key} = {value} is out of range: allowed {min}..={max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A value that is wrong for another reason (or together with another key).
    #[error("{key}: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The file (with its overrides) is not a valid configuration.
    #[error("{0}")]
    Parse(String),
    /// An environment variable with the prefix names no key.
    #[error("{var} names no configuration key (the keys are those of `init-config`)")]
    UnknownEnv {
        /// The variable.
        var: String,
    },
}

/// Where the chain comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// The embedded regtest ledger, served to participants as the dev chain endpoint.
    Dev,
    /// A Bitcoin Core node over JSON-RPC.
    Bitcoind,
}

/// The configuration file: every key optional, defaults from [`FileConfig::default`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub dev: bool,
    pub chain: Option<ChainKind>,
    pub network: bitcoin::Network,
    /// Empty: `http://127.0.0.1:<the network's default RPC port>`.
    pub bitcoind_url: String,
    /// Empty: the cookie in `~/.bitcoin` (or `bitcoind_datadir`), unless a user is set.
    pub bitcoind_cookie: String,
    pub bitcoind_datadir: String,
    pub bitcoind_user: String,
    pub bitcoind_password: String,
    pub round_interval_secs: u64,
    pub registration_window_secs: u64,
    pub phase_timeout_secs: u64,
    pub ban_secs: u64,
    pub max_ban_secs: u64,
    pub max_attempts: u8,
    pub max_registrations: usize,
    pub radix: u8,
    pub max_depth: u8,
    pub fee_rate_sat_per_kwu: u64,
    pub service_base_sat: u64,
    pub service_ppm: u32,
    pub exit_csv: u16,
    pub deposit_csv: u16,
    pub max_deposit_csv: u16,
    pub min_confs: u32,
    pub safety_margin: u32,
    pub max_leaves_per_registration: u16,
    pub max_deposits_per_registration: u16,
    pub max_batch_weight: u64,
    /// Hex script paid the service fees; empty = P2TR of the coordinator key.
    pub payout_script_hex: String,
    pub max_frame: u32,
    pub max_connections: usize,
    pub max_messages_per_sec: u32,
    pub max_handshakes: usize,
    pub max_proposals_in_flight: usize,
    pub idle_timeout_secs: u64,
    pub keep_alive_secs: u64,
    pub socket_buffer: usize,
    /// Empty: off. Else the TCP address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: String,
    /// Empty: `<data_dir>/admin.sock`.
    pub admin_socket: String,
    pub shutdown_grace_secs: u64,
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
            max_ban_secs: engine.max_ban_duration.as_secs(),
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
            metrics_listen: String::new(),
            admin_socket: String::new(),
            shutdown_grace_secs: 120,
        }
    }
}

/// The comment `init-config` prints above each key.
pub const COMMENTS: &[(&str, &str)] = &[
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
    (
        "ban_secs",
        "how long a culprit's deposits stay banned after a first offence (doubled for each repeat)",
    ),
    ("max_ban_secs", "the longest ban a repeat offender gets"),
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
    (
        "metrics_listen",
        "HTTP /metrics (Prometheus), /healthz, /readyz on this TCP address, e.g. \"127.0.0.1:9464\"; empty = off",
    ),
    (
        "admin_socket",
        "Unix socket of `cohort-coordinator admin` (owner-only); empty = <data_dir>/admin.sock",
    ),
    (
        "shutdown_grace_secs",
        "on SIGTERM or SIGINT, how long the running round may take to finish (0 = stop at once)",
    ),
];

/// One numeric key and its allowed range.
struct Range {
    key: &'static str,
    value: fn(&FileConfig) -> u64,
    min: u64,
    max: u64,
}

/// Most seconds a duration setting may hold (a day, the engine's window limit).
const MAX_SECS: u64 = MAX_WINDOW_MS / 1_000;

/// Every numeric key's range (relations between keys are checked after).
const RANGES: &[Range] = &[
    Range { key: "round_interval_secs", value: |f| f.round_interval_secs, min: 1, max: MAX_SECS },
    Range {
        key: "registration_window_secs",
        value: |f| f.registration_window_secs,
        min: 1,
        max: MAX_SECS,
    },
    Range { key: "phase_timeout_secs", value: |f| f.phase_timeout_secs, min: 1, max: MAX_SECS },
    Range { key: "ban_secs", value: |f| f.ban_secs, min: 0, max: 365 * 86_400 },
    Range { key: "max_ban_secs", value: |f| f.max_ban_secs, min: 0, max: 365 * 86_400 },
    Range { key: "shutdown_grace_secs", value: |f| f.shutdown_grace_secs, min: 0, max: MAX_SECS },
    Range { key: "max_attempts", value: |f| f.max_attempts.into(), min: 1, max: 100 },
    Range {
        key: "max_registrations",
        value: |f| f.max_registrations as u64,
        min: 1,
        max: 1_000_000,
    },
    Range {
        key: "radix",
        value: |f| f.radix.into(),
        min: *RADIX_RANGE.start() as u64,
        max: *RADIX_RANGE.end() as u64,
    },
    Range { key: "max_depth", value: |f| f.max_depth.into(), min: 1, max: MAX_DEPTH_LIMIT as u64 },
    Range {
        key: "fee_rate_sat_per_kwu",
        value: |f| f.fee_rate_sat_per_kwu,
        min: MIN_FEE_RATE_SAT_KWU,
        // 10,000 sat/vB.
        max: 2_500_000,
    },
    Range {
        key: "service_base_sat",
        value: |f| f.service_base_sat,
        min: 0,
        // 21 M BTC.
        max: 2_100_000_000_000_000,
    },
    Range { key: "service_ppm", value: |f| f.service_ppm.into(), min: 0, max: 1_000_000 },
    Range { key: "exit_csv", value: |f| f.exit_csv.into(), min: 1, max: MAX_DEPOSIT_CSV as u64 },
    Range {
        key: "deposit_csv",
        value: |f| f.deposit_csv.into(),
        min: 1,
        max: MAX_DEPOSIT_CSV as u64,
    },
    Range {
        key: "max_deposit_csv",
        value: |f| f.max_deposit_csv.into(),
        min: 1,
        max: MAX_DEPOSIT_CSV as u64,
    },
    Range {
        key: "min_confs",
        value: |f| f.min_confs.into(),
        min: 1,
        max: MAX_BLOCKS_SETTING as u64,
    },
    Range {
        key: "safety_margin",
        value: |f| f.safety_margin.into(),
        min: 0,
        max: MAX_BLOCKS_SETTING as u64,
    },
    Range {
        key: "max_leaves_per_registration",
        value: |f| f.max_leaves_per_registration.into(),
        min: 1,
        max: MAX_PER_REGISTRATION as u64,
    },
    Range {
        key: "max_deposits_per_registration",
        value: |f| f.max_deposits_per_registration.into(),
        min: 1,
        max: MAX_PER_REGISTRATION as u64,
    },
    Range {
        key: "max_batch_weight",
        value: |f| f.max_batch_weight,
        min: MIN_BATCH_WEIGHT,
        max: MAX_STANDARD_WEIGHT.to_wu(),
    },
    Range { key: "max_frame", value: |f| f.max_frame.into(), min: 64 * 1024, max: 64 << 20 },
    Range { key: "max_connections", value: |f| f.max_connections as u64, min: 1, max: 1_000_000 },
    Range {
        key: "max_messages_per_sec",
        value: |f| f.max_messages_per_sec.into(),
        min: 1,
        max: 1_000_000,
    },
    Range { key: "max_handshakes", value: |f| f.max_handshakes as u64, min: 1, max: 100_000 },
    Range {
        key: "max_proposals_in_flight",
        value: |f| f.max_proposals_in_flight as u64,
        min: 1,
        max: 100_000,
    },
    Range { key: "idle_timeout_secs", value: |f| f.idle_timeout_secs, min: 2, max: 3_600 },
    Range { key: "keep_alive_secs", value: |f| f.keep_alive_secs, min: 1, max: 3_599 },
    Range { key: "socket_buffer", value: |f| f.socket_buffer as u64, min: 64 * 1024, max: 1 << 30 },
];

impl FileConfig {
    /// Reads `text` (a TOML file; empty for none), then applies every `COHORT_COORDINATOR_*`
    /// variable of `env` over it. Unknown keys, in the file or the environment, are refused.
    pub fn load(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<FileConfig, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let known = toml::Table::try_from(FileConfig::default())
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (var, raw) in env {
            let Some(suffix) = var.strip_prefix(ENV_PREFIX) else { continue };
            let key = suffix.to_ascii_lowercase();
            // `chain` has no default, so it is not in the encoded defaults.
            if !known.contains_key(&key) && key != "chain" {
                return Err(ConfigError::UnknownEnv { var });
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw));
            table.insert(key, value);
        }
        table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
    }

    /// Every key within its range, and the keys that depend on each other consistent.
    pub fn check(&self) -> Result<(), ConfigError> {
        for r in RANGES {
            let value = (r.value)(self);
            if value < r.min || value > r.max {
                return Err(ConfigError::OutOfRange { key: r.key, value, min: r.min, max: r.max });
            }
        }
        let invalid = |key, why: String| Err(ConfigError::Invalid { key, why });
        if self.keep_alive_secs >= self.idle_timeout_secs {
            return invalid(
                "keep_alive_secs",
                format!("must be below idle_timeout_secs ({})", self.idle_timeout_secs),
            );
        }
        if self.max_ban_secs < self.ban_secs {
            return invalid(
                "max_ban_secs",
                format!(
                    "below ban_secs ({}): a repeat offence would be banned for less",
                    self.ban_secs
                ),
            );
        }
        if self.deposit_csv > self.max_deposit_csv {
            return invalid(
                "deposit_csv",
                format!(
                    "above max_deposit_csv ({}): every deposit would be refused",
                    self.max_deposit_csv
                ),
            );
        }
        // A fresh deposit needs min_confs blocks and must still be more than
        // safety_margin blocks from its timeout.
        if u32::from(self.deposit_csv) <= self.safety_margin.saturating_add(self.min_confs) {
            return invalid(
                "deposit_csv",
                format!(
                    "{} is not above safety_margin + min_confs ({}): every deposit would be \
                     refused as expiring",
                    self.deposit_csv,
                    self.safety_margin.saturating_add(self.min_confs)
                ),
            );
        }
        if !self.payout_script_hex.is_empty() {
            self.payout_script()?;
        }
        self.metrics_listen()?;
        self.chain_kind().map(drop)
    }

    /// The admin socket's path.
    pub fn admin_socket(&self) -> PathBuf {
        if self.admin_socket.is_empty() {
            crate::admin::default_socket(&self.data_dir)
        } else {
            PathBuf::from(&self.admin_socket)
        }
    }

    /// How long a signal lets the running round finish.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The metrics endpoint's address, if on.
    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|e| ConfigError::Invalid {
            key: "metrics_listen",
            why: format!("{:?} is not an address like 127.0.0.1:9464: {e}", self.metrics_listen),
        })
    }

    fn payout_script(&self) -> Result<Option<ScriptBuf>, ConfigError> {
        if self.payout_script_hex.is_empty() {
            return Ok(None);
        }
        let script = ScriptBuf::from_hex(&self.payout_script_hex).map_err(|e| {
            ConfigError::Invalid { key: "payout_script_hex", why: format!("not hex: {e}") }
        })?;
        if !cohort_common::standard::is_standard_leaf(&script) {
            return Err(ConfigError::Invalid {
                key: "payout_script_hex",
                why: "not a P2TR, P2WPKH or P2WSH script: the fee output would not relay".into(),
            });
        }
        Ok(Some(script))
    }

    /// The service configuration, for the coordinator key `key`.
    pub fn service_config(&self, key: &Keypair) -> Result<ServiceConfig, ConfigError> {
        self.check()?;
        let payout = self.payout_script()?.unwrap_or_else(|| p2tr_single(key));
        let mut engine = CoordinatorConfig::new(payout);
        engine.tree = TreeParams { radix: self.radix, max_depth: self.max_depth };
        engine.fees = FeeSchedule {
            fee_rate: FeeRate::from_sat_per_kwu(self.fee_rate_sat_per_kwu),
            service_base: Amount::from_sat(self.service_base_sat),
            service_ppm: self.service_ppm,
        };
        engine.exit_csv = self.exit_csv;
        engine.max_deposit_csv = self.max_deposit_csv;
        engine.min_confs = self.min_confs;
        engine.safety_margin = self.safety_margin;
        engine.max_leaves_per_registration = self.max_leaves_per_registration;
        engine.max_deposits_per_registration = self.max_deposits_per_registration;
        engine.max_batch_weight = self.max_batch_weight;
        engine.registration_window = Duration::from_secs(self.registration_window_secs);
        engine.max_registrations = self.max_registrations;
        engine.phase_timeout = Duration::from_secs(self.phase_timeout_secs);
        engine.max_attempts = self.max_attempts;
        engine.ban_duration = Duration::from_secs(self.ban_secs);
        engine.max_ban_duration = Duration::from_secs(self.max_ban_secs);
        // The protocol's own check, as every participant runs it on the announce.
        engine
            .validate(key.public)
            .map_err(|e| ConfigError::Parse(format!("invalid config: {e}")))?;
        Ok(ServiceConfig {
            listen: self.listen,
            engine,
            round_interval: Duration::from_secs(self.round_interval_secs),
            limits: Limits {
                max_frame: self.max_frame,
                max_connections: self.max_connections,
                max_messages_per_sec: self.max_messages_per_sec,
                max_handshakes: self.max_handshakes,
                max_proposals_in_flight: self.max_proposals_in_flight,
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                keep_alive: Duration::from_secs(self.keep_alive_secs),
                socket_buffer: self.socket_buffer,
                // Only clients wait for handshakes; a coordinator never connects out.
                ..Limits::default()
            },
            confirmation_poll: Duration::from_secs(1),
            network: self.network,
            deposit_csv: self.deposit_csv,
            metrics_listen: self.metrics_listen()?,
            admin_socket: Some(self.admin_socket()),
        })
    }

    /// The chain backend the file asks for. Refuses a setting that would do nothing: a
    /// `bitcoind_*` setting with the dev chain, or the dev chain on another network.
    pub fn chain_kind(&self) -> Result<ChainKind, ConfigError> {
        let kind = match (self.dev, self.chain) {
            (true, Some(ChainKind::Bitcoind)) => {
                return Err(ConfigError::Invalid {
                    key: "chain",
                    why: "dev = true and chain = \"bitcoind\" contradict each other".into(),
                })
            }
            (true, _) | (false, Some(ChainKind::Dev)) => ChainKind::Dev,
            (false, Some(ChainKind::Bitcoind)) => ChainKind::Bitcoind,
            (false, None) => {
                return Err(ConfigError::Invalid {
                    key: "chain",
                    why: "no chain backend: run with --dev (embedded regtest ledger) or \
                          --chain bitcoind"
                        .into(),
                })
            }
        };
        if kind == ChainKind::Dev {
            if self.network != bitcoin::Network::Regtest {
                return Err(ConfigError::Invalid {
                    key: "network",
                    why: format!(
                        "the dev chain is regtest: network = {} needs chain = \"bitcoind\"",
                        self.network
                    ),
                });
            }
            let set = [
                ("bitcoind_url", &self.bitcoind_url),
                ("bitcoind_cookie", &self.bitcoind_cookie),
                ("bitcoind_datadir", &self.bitcoind_datadir),
                ("bitcoind_user", &self.bitcoind_user),
                ("bitcoind_password", &self.bitcoind_password),
            ];
            if let Some((key, _)) = set.iter().find(|(_, v)| !v.is_empty()) {
                return Err(ConfigError::Invalid {
                    key,
                    why: "set, but the chain is the dev ledger: it would do nothing".into(),
                });
            }
        }
        Ok(kind)
    }

    /// The bitcoind client configuration the file describes; `home` stands in for `$HOME`.
    pub fn bitcoind_config(&self, home: Option<PathBuf>) -> Result<BitcoindConfig, ConfigError> {
        let network = self.network;
        let url = if self.bitcoind_url.is_empty() {
            format!("http://127.0.0.1:{}", default_rpc_port(network))
        } else {
            self.bitcoind_url.clone()
        };
        let auth = match (self.bitcoind_user.is_empty(), self.bitcoind_password.is_empty()) {
            (false, false) => {
                if !self.bitcoind_cookie.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "bitcoind_cookie",
                        why: "bitcoind_cookie and bitcoind_user are both set: choose one".into(),
                    });
                }
                RpcAuth::UserPass {
                    user: self.bitcoind_user.clone(),
                    password: self.bitcoind_password.clone(),
                }
            }
            (true, true) if !self.bitcoind_cookie.is_empty() => {
                RpcAuth::Cookie(PathBuf::from(&self.bitcoind_cookie))
            }
            (true, true) => {
                let datadir = if self.bitcoind_datadir.is_empty() {
                    home.ok_or_else(|| ConfigError::Invalid {
                        key: "bitcoind_datadir",
                        why: "HOME is not set: set bitcoind_datadir".into(),
                    })?
                    .join(".bitcoin")
                } else {
                    PathBuf::from(&self.bitcoind_datadir)
                };
                RpcAuth::cookie_in(&datadir, network)
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: "bitcoind_password",
                    why: "bitcoind_user and bitcoind_password go together".into(),
                })
            }
        };
        Ok(BitcoindConfig::new(url, auth, network))
    }
}

/// The default configuration with every key, each under its comment.
pub fn commented_default() -> Result<String, ConfigError> {
    let text =
        toml::to_string(&FileConfig::default()).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut out = String::from("# cohort-coordinator configuration (every key is optional)\n");
    out.push_str(&format!(
        "# Any key can also be set by the environment: {ENV_PREFIX}<KEY IN UPPER CASE>.\n"
    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (format!("{ENV_PREFIX}{k}"), (*v).to_owned())).collect()
    }

    fn dev(extra: &[(&str, &str)]) -> Result<FileConfig, ConfigError> {
        let mut pairs = vec![("DEV", "true")];
        pairs.extend_from_slice(extra);
        let file = FileConfig::load("", env(&pairs))?;
        file.check().map(|()| file)
    }

    #[test]
    fn the_defaults_pass_on_the_dev_chain() {
        let file = dev(&[]).unwrap();
        assert!(file.service_config(&Keypair::random()).is_ok());
        // Without a chain the refusal names the key.
        let plain = FileConfig::load("", Vec::new()).unwrap();
        assert!(matches!(plain.check(), Err(ConfigError::Invalid { key: "chain", .. })));
    }

    #[test]
    fn every_numeric_key_is_refused_just_outside_its_range_by_name() {
        for r in RANGES {
            let mut outside = vec![r.max + 1];
            if r.min > 0 {
                outside.push(r.min - 1);
            }
            for value in outside {
                let key = r.key.to_ascii_uppercase();
                let err = dev(&[(&key, &value.to_string())]).unwrap_err();
                let want = ConfigError::OutOfRange { key: r.key, value, min: r.min, max: r.max };
                assert_eq!(err, want, "{} = {value}", r.key);
                assert!(err.to_string().starts_with(&format!("{} = {value}", r.key)));
            }
            // The edges themselves pass (unless another key's relation forbids them).
            let default = (r.value)(&FileConfig::default());
            assert!((r.min..=r.max).contains(&default), "{}'s default is out of range", r.key);
        }
    }

    #[test]
    fn keys_that_depend_on_each_other_are_refused_together() {
        let err = dev(&[("BAN_SECS", "600"), ("MAX_BAN_SECS", "60")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "max_ban_secs", .. }), "{err}");
        let err = dev(&[("KEEP_ALIVE_SECS", "45")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "keep_alive_secs", .. }), "{err}");
        let err = dev(&[("DEPOSIT_CSV", "20000"), ("MAX_DEPOSIT_CSV", "10000")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "deposit_csv", .. }), "{err}");
        let err = dev(&[("DEPOSIT_CSV", "145")]).unwrap_err();
        assert!(err.to_string().contains("expiring"), "{err}");
        let err = dev(&[("PAYOUT_SCRIPT_HEX", "\"76a914\"")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "payout_script_hex", .. }), "{err}");
        let err = dev(&[("BITCOIND_URL", "http://127.0.0.1:1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "bitcoind_url", .. }), "{err}");
        let err = dev(&[("METRICS_LISTEN", "localhost")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "metrics_listen", .. }), "{err}");
        let err = dev(&[("NETWORK", "signet")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "network", .. }), "{err}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_unknown_names_are_refused() {
        let text = "dev = true\nmax_attempts = 5\nnetwork = \"regtest\"\n";
        let file = FileConfig::load(text, env(&[("MAX_ATTEMPTS", "7")])).unwrap();
        assert_eq!(file.max_attempts, 7);
        // A bare word is a string; other variables are not ours.
        let vars = env(&[("NETWORK", "signet"), ("CHAIN", "bitcoind")]);
        let vars = vars.into_iter().chain([("COHORT_BITCOIND".into(), "/x".into())]);
        let file = FileConfig::load("", vars).unwrap();
        assert_eq!(
            (file.network, file.chain),
            (bitcoin::Network::Signet, Some(ChainKind::Bitcoind))
        );
        let err = FileConfig::load("", env(&[("MAX_ATEMPTS", "7")])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownEnv { .. }), "{err}");
        let err = FileConfig::load("max_atempts = 7", Vec::new()).unwrap_err();
        assert!(err.to_string().contains("max_atempts"), "{err}");
        let err = FileConfig::load("", env(&[("MAX_ATTEMPTS", "many")])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)), "{err}");
    }

    #[test]
    fn init_config_prints_every_key_under_its_comment_and_reads_back() {
        let text = commented_default().unwrap();
        let defaults = toml::Table::try_from(FileConfig::default()).unwrap();
        for key in defaults.keys() {
            assert!(COMMENTS.iter().any(|(k, _)| k == key), "{key} has no comment");
            assert!(text.contains(&format!("\n{key} = ")), "{key} is not printed");
        }
        let back = FileConfig::load(&text, Vec::new()).unwrap();
        assert_eq!(toml::Table::try_from(back).unwrap(), defaults);
    }
}
