//! The admin channel's protocol: what `cohort-coordinator admin` asks a running service
//! over its local Unix socket, what comes back, how both print, and the client side.
//!
//! One request per connection: the client writes one JSON line ([`AdminRequest`]), the
//! service answers with one JSON line ([`AdminResponse`]) and closes. The socket is the
//! authentication: it is created owner-only (mode 0600) in the data directory, and the
//! service also refuses a peer whose user id is not its own. Lines are bounded
//! ([`MAX_REQUEST_LINE`], [`MAX_RESPONSE_LINE`]) before anything is parsed.

use std::fmt::{self, Display, Formatter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::{OutPoint, Txid};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use cohort_common::time::utc_time;

use crate::engine::RoundStage;

/// The socket's file name in the data directory, unless the config names another path.
pub const SOCKET_NAME: &str = "admin.sock";

/// Longest request line the service reads.
pub const MAX_REQUEST_LINE: usize = 4 * 1024;

/// Longest response line the client reads.
pub const MAX_RESPONSE_LINE: usize = 16 * 1024 * 1024;

/// Most rounds `rounds` lists.
pub const MAX_ROUNDS_LISTED: usize = 1_000;

/// How many rounds' timelines the service keeps in memory for `admin round N --timeline`.
pub const TIMELINE_ROUNDS_KEPT: usize = 16;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    /// The service now: mode, round, batches, peers, bans.
    Status,
    /// The latest rounds, newest first.
    Rounds {
        /// At most this many (1..=[`MAX_ROUNDS_LISTED`]).
        limit: usize,
    },
    /// One round: its registrations and every attempt of every batch.
    Round {
        /// The round.
        round: u64,
    },
    /// One batch of a round: its attempts and its signed tree.
    Batch {
        /// The round.
        round: u64,
        /// The batch's index in the round.
        batch: u32,
    },
    /// The bans in force.
    Bans,
    /// One round's timeline, drawn as an SVG (rounds this process saw, the last
    /// [`TIMELINE_ROUNDS_KEPT`]).
    Timeline {
        /// The round.
        round: u64,
    },
    /// Lifts a deposit's ban.
    Unban {
        /// The banned deposit.
        outpoint: OutPoint,
    },
    /// Finish the running round, open no new one, then exit.
    Drain,
    /// Open no new round until `resume` (the running one finishes).
    Pause,
    /// Open rounds again after `pause`.
    Resume,
    /// The latest co-signed cooperative withdrawals, newest first.
    Withdrawals {
        /// At most this many (1..=[`MAX_ROUNDS_LISTED`]).
        limit: usize,
    },
}

/// What the service answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum AdminResponse {
    /// Answer to `status`.
    Status(StatusView),
    /// Answer to `rounds`.
    Rounds(Vec<RoundSummary>),
    /// Answer to `round N`.
    Round(RoundDetail),
    /// Answer to `batch R:B`.
    Batch(BatchDetail),
    /// Answer to `bans`.
    Bans(Vec<BanView>),
    /// Answer to `timeline`: the SVG picture.
    Timeline(String),
    /// Answer to `withdrawals`.
    Withdrawals(Vec<WithdrawalView>),
    /// A command was carried out; what it did.
    Done(String),
    /// A command was refused or failed; why.
    Error(String),
}

/// What the service is doing about rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Opening rounds on schedule.
    Running,
    /// Opening no new round until `resume`.
    Paused,
    /// Finishing the running round, then exiting.
    Draining,
}

/// The service now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The coordinator's version.
    pub version: String,
    /// The network.
    pub network: String,
    /// `dev` or `external`.
    pub chain: String,
    /// The coordinator's public key.
    pub coordinator_key: String,
    /// Seconds since the service started.
    pub uptime_secs: u64,
    /// What it does about rounds.
    pub mode: Mode,
    /// Participants connected.
    pub peers: usize,
    /// The current (or last) round.
    pub round: Option<u64>,
    /// Where it stands.
    pub stage: Option<RoundStage>,
    /// Registrations accepted into it.
    pub registrations: usize,
    /// Its batches' phases, in batch order.
    pub batches: Vec<String>,
    /// When the next round opens, in milliseconds from now (none while one runs, or
    /// paused or draining).
    pub next_round_in_ms: Option<u64>,
    /// Deposits banned now.
    pub bans: usize,
    /// Funding transactions found unfinished at start-up still being broadcast.
    pub rebroadcasting: usize,
}

/// One round in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round.
    pub round: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Where it stands (`registering`, `signing`, `finished`, `aborted`).
    pub state: String,
    /// Registrations accepted.
    pub registrations: usize,
    /// Batches formed.
    pub batches: usize,
    /// Batches whose funding transaction is on the chain (broadcast or confirmed).
    pub finalized: usize,
}

/// One round in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundDetail {
    /// The summary line.
    pub summary: RoundSummary,
    /// Registrations by status (`accepted`, `in batch`, `excluded`, `cancelled`,
    /// `completed`), each with its count.
    pub registrations_by_status: Vec<(String, usize)>,
    /// Every attempt of every batch, in batch and attempt order.
    pub attempts: Vec<AttemptView>,
}

/// One signing attempt of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// The batch.
    pub batch: u32,
    /// The attempt.
    pub attempt: u32,
    /// Where it stands (`signing`, `tree signed`, `broadcasting`, `finalized`,
    /// `confirmed at H`, `aborted: why`).
    pub status: String,
    /// Its funding transaction's id (final once the deposits are signed).
    pub funding_txid: Txid,
    /// Deposits it spends.
    pub inputs: usize,
    /// Its virtual size, in vbytes.
    pub vsize: usize,
}

/// One batch in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDetail {
    /// The round.
    pub round: u64,
    /// The batch.
    pub batch: u32,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Node transactions of its signed tree (none until stored).
    pub tree_nodes: usize,
}

/// One ban in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    /// The deposit.
    pub outpoint: OutPoint,
    /// Banned until, in milliseconds since the Unix epoch.
    pub until_ms: u64,
    /// Offences so far.
    pub offences: u32,
    /// Why.
    pub reason: String,
}

/// One co-signed cooperative withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalView {
    /// Its txid.
    pub txid: Txid,
    /// The deposits it spends.
    pub deposits: Vec<OutPoint>,
    /// What the deposits hold, in sat.
    pub in_sat: u64,
    /// What its outputs pay, in sat.
    pub out_sat: u64,
    /// When it was co-signed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Errors of the admin client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket could not be reached: the service is not running there.
    #[error(
        "no coordinator answers at {path}: {source} (is it running with this data directory?)"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    /// The service closed without answering (it refused this user, or it stopped).
    #[error("the coordinator closed the admin connection without an answer")]
    NoAnswer,
    /// The answer was too long or not an answer.
    #[error("malformed answer from the coordinator: {0}")]
    Malformed(String),
    /// No answer within the timeout.
    #[error("no answer from the coordinator within {0:?}")]
    Timeout(Duration),
}

/// The socket of a data directory (`admin_socket` in the config may name another).
pub fn default_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Sends one request to the service listening at `socket` and waits at most `timeout`
/// for its answer.
pub async fn request(
    socket: &Path,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminResponse, AdminError> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| AdminError::Connect { path: socket.to_owned(), source })?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| AdminError::Malformed(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let (read, _) = stream.split();
        let text = read_line(read, MAX_RESPONSE_LINE).await?.ok_or(AdminError::NoAnswer)?;
        serde_json::from_str(&text).map_err(|e| AdminError::Malformed(e.to_string()))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| AdminError::Timeout(timeout))?
}

/// Reads one `\n`-terminated line of at most `max` bytes (`None`: closed before any byte).
pub async fn read_line(
    read: impl tokio::io::AsyncRead + Unpin,
    max: usize,
) -> Result<Option<String>, AdminError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    BufReader::new(read.take(limit)).read_until(b'\n', &mut bytes).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > max || bytes.last() != Some(&b'\n') {
        return Err(AdminError::Malformed(format!("a line longer than {max} bytes or cut short")));
    }
    bytes.pop();
    String::from_utf8(bytes).map(Some).map_err(|_| AdminError::Malformed("not UTF-8".into()))
}

impl Display for Mode {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Running => "running",
            Mode::Paused => "paused (no new round until resume)",
            Mode::Draining => "draining (exits when the running round is done)",
        })
    }
}

impl Display for AdminResponse {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            AdminResponse::Status(s) => s.fmt(f),
            AdminResponse::Rounds(rounds) => {
                writeln!(
                    f,
                    "{:>8}  {:<23}  {:<10} {:>6} {:>8} {:>10}",
                    "round", "started", "state", "regs", "batches", "finalized"
                )?;
                rounds.iter().try_for_each(|r| writeln!(f, "{r}"))
            }
            AdminResponse::Round(r) => r.fmt(f),
            AdminResponse::Batch(b) => b.fmt(f),
            AdminResponse::Bans(bans) if bans.is_empty() => writeln!(f, "no deposit is banned"),
            AdminResponse::Bans(bans) => bans.iter().try_for_each(|b| writeln!(f, "{b}")),
            AdminResponse::Timeline(svg) => writeln!(f, "{svg}"),
            AdminResponse::Withdrawals(w) if w.is_empty() => {
                writeln!(f, "no withdrawal co-signed")
            }
            AdminResponse::Withdrawals(w) => w.iter().try_for_each(|w| writeln!(f, "{w}")),
            AdminResponse::Done(what) => writeln!(f, "{what}"),
            AdminResponse::Error(why) => writeln!(f, "error: {why}"),
        }
    }
}

impl Display for StatusView {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cohort-coordinator {} on {} ({} chain)",
            self.version, self.network, self.chain
        )?;
        writeln!(f, "key          {}", self.coordinator_key)?;
        writeln!(f, "up           {} s", self.uptime_secs)?;
        writeln!(f, "mode         {}", self.mode)?;
        writeln!(f, "peers        {}", self.peers)?;
        match (self.round, self.stage) {
            (Some(round), Some(stage)) => writeln!(
                f,
                "round        {round}: {} ({} registrations)",
                stage_name(stage),
                self.registrations
            )?,
            _ => writeln!(f, "round        none yet")?,
        }
        for (i, phase) in self.batches.iter().enumerate() {
            writeln!(f, "  batch {i:<4} {phase}")?;
        }
        if let Some(ms) = self.next_round_in_ms {
            writeln!(f, "next round   in {:.1} s", ms as f64 / 1e3)?;
        }
        writeln!(f, "bans         {} in force", self.bans)?;
        if self.rebroadcasting > 0 {
            writeln!(f, "rebroadcast  {} stored funding transactions", self.rebroadcasting)?;
        }
        Ok(())
    }
}

fn stage_name(stage: RoundStage) -> &'static str {
    match stage {
        RoundStage::Registration => "taking registrations",
        RoundStage::Running => "running",
        RoundStage::Done => "done",
    }
}

impl Display for RoundSummary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8}  {:<23}  {:<10} {:>6} {:>8} {:>10}",
            self.round,
            utc_time(self.started_at_ms),
            self.state,
            self.registrations,
            self.batches,
            self.finalized
        )
    }
}

impl Display for RoundDetail {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        writeln!(f, "round {} started {}: {}", s.round, utc_time(s.started_at_ms), s.state)?;
        let regs: Vec<String> =
            self.registrations_by_status.iter().map(|(k, n)| format!("{n} {k}")).collect();
        writeln!(f, "registrations {} ({})", s.registrations, regs.join(", "))?;
        for a in &self.attempts {
            writeln!(f, "{a}")?;
        }
        Ok(())
    }
}

impl Display for AttemptView {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch {:<3} attempt {:<2} {:<24} {} ({} inputs, {} vB)",
            self.batch, self.attempt, self.status, self.funding_txid, self.inputs, self.vsize
        )
    }
}

impl Display for BatchDetail {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "round {} batch {}: {} tree nodes stored",
            self.round, self.batch, self.tree_nodes
        )?;
        self.attempts.iter().try_for_each(|a| writeln!(f, "{a}"))
    }
}

impl Display for WithdrawalView {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let deposits: Vec<String> = self.deposits.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}  at {}  {} sat in, {} sat out  deposits {}",
            self.txid,
            utc_time(self.at_ms),
            self.in_sat,
            self.out_sat,
            deposits.join(", ")
        )
    }
}

impl Display for BanView {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  until {}  offences {}  {}",
            self.outpoint,
            utc_time(self.until_ms),
            self.offences,
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let outpoint: OutPoint =
            "0101010101010101010101010101010101010101010101010101010101010101:3".parse().unwrap();
        for req in [
            AdminRequest::Status,
            AdminRequest::Rounds { limit: 5 },
            AdminRequest::Round { round: 7 },
            AdminRequest::Batch { round: 7, batch: 2 },
            AdminRequest::Bans,
            AdminRequest::Unban { outpoint },
            AdminRequest::Drain,
            AdminRequest::Pause,
            AdminRequest::Resume,
            AdminRequest::Withdrawals { limit: 3 },
        ] {
            let line = serde_json::to_string(&req).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<AdminRequest>(&line).unwrap(), req);
        }
        let line = r#"{"command":"unban","outpoint":"0101010101010101010101010101010101010101010101010101010101010101:3"}"#;
        assert_eq!(
            serde_json::from_str::<AdminRequest>(line).unwrap(),
            AdminRequest::Unban { outpoint }
        );
        assert!(serde_json::from_str::<AdminRequest>(r#"{"command":"explode"}"#).is_err());
    }

    #[tokio::test]
    async fn lines_are_bounded_before_they_are_kept() {
        let long = [b'x'; 100];
        let err = read_line(&long[..], 10).await.unwrap_err();
        assert!(matches!(err, AdminError::Malformed(_)), "{err}");
        // Cut short: no newline at the end.
        assert!(read_line(&b"{}"[..], 10).await.is_err());
        assert_eq!(read_line(&b""[..], 10).await.unwrap(), None);
        assert_eq!(read_line(&b"{}\nrest"[..], 10).await.unwrap().as_deref(), Some("{}"));
        assert!(read_line(&b"\xff\n"[..], 10).await.is_err());
    }
}
