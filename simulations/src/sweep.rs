//! `cohort-sim sweep`: the in-memory round at several sizes, each in a fresh process of
//! the same binary, written out as a table (`SCALING.md`, CSV, JSON) and SVG plots.
//!
//! Each size runs as `cohort-sim --users N --seed S --json FILE` in a child process, so
//! the peak memory (`VmHWM`) and CPU times its report gives are that size's alone. The
//! outputs are rewritten after every size: a sweep stopped at a large size keeps the
//! table of the sizes before it.

mod plots;
mod table;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::round::{ChainFootprint, PhaseTimes};

pub use table::Machine;

/// The sizes a sweep runs when none are given.
pub const DEFAULT_SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// Where the figures go inside the output directory.
pub const FIGURES_DIR: &str = "figures";

/// The Markdown file the sweep writes into the output directory.
pub const SCALING_FILE: &str = "SCALING.md";

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Users of each run, strictly increasing.
    pub sizes: Vec<usize>,
    /// The seed every run uses.
    pub seed: u64,
    /// The directory `SCALING.md` and `figures/` are written into.
    pub out: PathBuf,
    /// The sweep's own command line, as the table cites it.
    pub command: String,
}

/// The part of one run's `--json` report the sweep tabulates (see
/// [`RoundReport`](crate::round::RoundReport) for each field's meaning).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Participants.
    pub users: usize,
    /// Honest users whose leaves are in a confirmed batch.
    pub completed: usize,
    /// Batches (only their count is tabulated).
    pub batches: Vec<serde_json::Value>,
    /// On-chain footprint of the confirmed batches.
    pub chain: ChainFootprint,
    /// Wall time of the whole run, setup included.
    pub wall_ms: u64,
    /// Wall time per phase.
    pub phase_ms: PhaseTimes,
    /// CPU time inside the coordinator engine.
    pub coordinator_cpu_ms: u64,
    /// CPU time inside the participants' drivers, all together.
    pub participant_cpu_ms: Option<u64>,
    /// CPU time of the ledger's checks of the funding transactions.
    pub ledger_cpu_ms: u64,
    /// Messages to participants.
    pub messages_to_participants: u64,
    /// Messages from participants.
    pub messages_from_participants: u64,
    /// Bytes to participants.
    pub bytes_to_participants: u64,
    /// Bytes from participants.
    pub bytes_from_participants: u64,
    /// Simulated protocol time.
    pub simulated_ms: u64,
    /// Peak resident memory of the run's process.
    pub peak_rss_bytes: u64,
}

impl Measured {
    /// `total` divided by the run's users.
    pub fn per_user(&self, total: u64) -> f64 {
        total as f64 / self.users.max(1) as f64
    }

    /// Virtual bytes of funding transactions per user in a confirmed batch.
    pub fn vbytes_per_user(&self) -> f64 {
        self.chain.funding_vbytes as f64 / self.completed.max(1) as f64
    }
}

/// Refuses a list of sizes a sweep cannot run: empty, a size of zero, or not strictly
/// increasing (a repeated size would give two rows for one N).
pub fn check_sizes(sizes: &[usize]) -> Result<()> {
    if sizes.is_empty() {
        bail!("sweep --users needs at least one number of users, e.g. --users 100,1000");
    }
    if sizes.contains(&0) {
        bail!("sweep --users 0: a round needs at least 1 user");
    }
    for pair in sizes.windows(2) {
        if pair[1] <= pair[0] {
            bail!("sweep --users must be strictly increasing: {} comes after {}", pair[1], pair[0]);
        }
    }
    Ok(())
}

/// Refuses an output directory the sweep could not write its results into, before any
/// run: it must exist and take a file, and so must its `figures/` (created if missing).
pub fn check_out(out: &Path) -> Result<()> {
    if !out.is_dir() {
        let why = if out.exists() { "is not a directory" } else { "does not exist" };
        bail!("sweep --out {} {why}", out.display());
    }
    let figures = out.join(FIGURES_DIR);
    if figures.exists() && !figures.is_dir() {
        bail!("sweep --out {}: {} is not a directory", out.display(), figures.display());
    }
    std::fs::create_dir_all(&figures).with_context(|| {
        format!("sweep --out {}: cannot create {}", out.display(), figures.display())
    })?;
    for dir in [out, figures.as_path()] {
        let probe = dir.join(format!(".cohort-sim-sweep-{}", std::process::id()));
        std::fs::write(&probe, b"").with_context(|| {
            format!("sweep --out {}: cannot write into {}", out.display(), dir.display())
        })?;
        std::fs::remove_file(&probe).ok();
    }
    Ok(())
}

/// Runs every size with the `cohort-sim` binary at `exe` and writes the outputs after
/// each; returns what each run measured.
pub fn run_sweep(config: &SweepConfig, exe: &Path) -> Result<Vec<Measured>> {
    check_sizes(&config.sizes)?;
    check_out(&config.out)?;
    let machine = Machine::this();
    let date = table::utc_date(std::time::SystemTime::now());
    let mut runs = Vec::with_capacity(config.sizes.len());
    let mut reports = Vec::with_capacity(config.sizes.len());
    for (k, &users) in config.sizes.iter().enumerate() {
        eprintln!("sweep: {users} users ({} of {})", k + 1, config.sizes.len());
        let (measured, report) = run_one(exe, users, config.seed)?;
        eprintln!(
            "sweep: {users} users done: {:.1} s wall, {:.0} MiB peak",
            measured.wall_ms as f64 / 1e3,
            measured.peak_rss_bytes as f64 / 1_048_576.0
        );
        runs.push(measured);
        reports.push(report);
        let written = Written { config, machine: &machine, date: &date, runs: &runs };
        written.write(&reports)?;
    }
    Ok(runs)
}

/// One size in a child process: its measured figures and its whole report.
fn run_one(exe: &Path, users: usize, seed: u64) -> Result<(Measured, serde_json::Value)> {
    let json =
        std::env::temp_dir().join(format!("cohort-sim-sweep-{}-{users}.json", std::process::id()));
    let status = Command::new(exe)
        .args(["--users", &users.to_string(), "--seed", &seed.to_string(), "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("starting {} for {users} users", exe.display()))?;
    if !status.success() {
        std::fs::remove_file(&json).ok();
        bail!("the run of {users} users failed ({status}); the outputs hold the sizes before it");
    }
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("reading the report of {users} users from {}", json.display()));
    std::fs::remove_file(&json).ok();
    let report: serde_json::Value = serde_json::from_str(&text?)
        .with_context(|| format!("the report of {users} users is not JSON"))?;
    let measured: Measured = serde_json::from_value(report.clone())
        .with_context(|| format!("the report of {users} users lacks a figure"))?;
    if measured.users != users {
        bail!("the run of {users} users reported {} users", measured.users);
    }
    Ok((measured, report))
}

/// The outputs of the runs so far.
struct Written<'a> {
    config: &'a SweepConfig,
    machine: &'a Machine,
    date: &'a str,
    runs: &'a [Measured],
}

impl Written<'_> {
    /// Writes `SCALING.md` (keeping its `## Notes`), the CSV, the JSON and the plots.
    fn write(&self, reports: &[serde_json::Value]) -> Result<()> {
        let out = &self.config.out;
        let figures = out.join(FIGURES_DIR);
        let scaling = out.join(SCALING_FILE);
        let notes = match std::fs::read_to_string(&scaling) {
            Ok(old) => table::notes(&old).map(str::to_owned),
            Err(_) => None,
        };
        let md = table::markdown(&table::Header {
            command: &self.config.command,
            date: self.date,
            seed: self.config.seed,
            machine: self.machine,
            runs: self.runs,
            notes: notes.as_deref(),
        });
        write(&scaling, md)?;
        write(&figures.join("scaling.csv"), table::csv(self.runs))?;
        let raw = serde_json::json!({
            "command": self.config.command,
            "date": self.date,
            "seed": self.config.seed,
            "machine": self.machine,
            "runs": reports,
        });
        write(&figures.join("scaling.json"), serde_json::to_string_pretty(&raw)?)?;
        plots::draw_all(&figures, self.runs)
    }
}

/// Writes `text` to `path`, replacing it.
fn write(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_present_positive_and_increasing() {
        assert!(check_sizes(&DEFAULT_SIZES).is_ok());
        assert!(check_sizes(&[7]).is_ok());
        let refusal = |sizes: &[usize]| format!("{:#}", check_sizes(sizes).expect_err("refused"));
        assert!(refusal(&[]).contains("at least one number"));
        assert!(refusal(&[0, 10]).contains("at least 1 user"));
        assert!(refusal(&[100, 100]).contains("strictly increasing: 100 comes after 100"));
        assert!(refusal(&[1000, 100]).contains("100 comes after 1000"));
    }
}
