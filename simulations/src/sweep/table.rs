//! The sweep's tables: `SCALING.md` (machine, command, date, two tables, what each
//! column measures) and the CSV of the same figures.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Measured, FIGURES_DIR};

/// The heading from which `SCALING.md` is the reader's: a new sweep keeps it and
/// everything after it.
const NOTES_HEADING: &str = "## Notes";

/// The machine the sweep ran on, as Linux describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// Total memory, in bytes (`/proc/meminfo`).
    pub memory_bytes: u64,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine; what cannot be read is "unknown" (or zero).
    pub fn this() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory_bytes,
            kernel: if kernel.is_empty() { "unknown".to_owned() } else { kernel },
        }
    }
}

/// Everything `SCALING.md` says.
#[derive(Debug)]
pub(super) struct Header<'a> {
    pub command: &'a str,
    pub date: &'a str,
    pub seed: u64,
    pub machine: &'a Machine,
    pub runs: &'a [Measured],
    /// The reader's notes from the previous `SCALING.md`, heading included.
    pub notes: Option<&'a str>,
}

/// The reader's notes in an existing `SCALING.md`: from its `## Notes` heading on.
pub(super) fn notes(old: &str) -> Option<&str> {
    let at = old.lines().position(|l| l.trim_end() == NOTES_HEADING)?;
    let offset: usize = old.lines().take(at).map(|l| l.len() + 1).sum();
    old.get(offset..)
}

/// `SCALING.md`.
pub(super) fn markdown(h: &Header<'_>) -> String {
    let m = h.machine;
    let mut s = String::new();
    let _ = write!(
        s,
        "# Scaling\n\n\
         <!-- Written by `cohort-sim sweep`: a new sweep rewrites everything above the \
         Notes heading and keeps that section as it is. -->\n\n\
         `{}` on {} (UTC).\n\n\
         Each size is one round through the real coordinator and participant engines on \
         the in-memory network (simulated time, seeded latency 5–50 ms per message), \
         `cohort-sim --users N --seed {}` with the defaults otherwise, run in a fresh \
         process of the same binary so the CPU and peak memory it reports are its own. One \
         run per size, no repetitions.\n\n\
         Machine: {}, {} logical CPUs, {:.1} GiB memory, Linux {}.\n\n",
        h.command,
        h.date,
        h.seed,
        m.cpu,
        m.cpus,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
    );
    s += "## Wall time per phase\n\nSeconds of wall-clock time.\n\n";
    s += &phase_table(h.runs);
    s += &format!(
        "\n![wall time per phase against users, log-log]({FIGURES_DIR}/scaling-wall.svg)\n\n"
    );
    s += "## Per user\n\nEach total divided by the run's users.\n\n";
    s += &per_user_table(h.runs);
    for (file, alt) in [
        ("scaling-cpu.svg", "CPU per user against users"),
        ("scaling-bytes.svg", "bytes per user each way against users"),
        ("scaling-memory.svg", "peak memory per user against users"),
    ] {
        s += &format!("\n![{alt}]({FIGURES_DIR}/{file})\n");
    }
    s += &format!(
        "\nThe raw figures: [`{FIGURES_DIR}/scaling.csv`]({FIGURES_DIR}/scaling.csv) (these \
         tables) and [`{FIGURES_DIR}/scaling.json`]({FIGURES_DIR}/scaling.json) (each run's \
         whole `--json` report).\n\n"
    );
    s += COLUMNS;
    s += "\n";
    s += h.notes.unwrap_or("## Notes\n\nNone yet.\n");
    s
}

/// What each column is, and what the simulator does not measure.
const COLUMNS: &str = "## What the columns measure\n\n\
- *deposits*: funding every user's deposit on the embedded ledger (setup, not protocol).\n\
- *registration*, *tree signing*, *deposit signing*, *confirmation*: wall time until the \
last batch was proposed, its tree signed, its funding transaction broadcast, and its \
confirmation arrived. Simulated waits (latencies, timers) cost no wall time; \
*simulated* is the protocol's own clock.\n\
- *exits*: the default sample of users (first, middle, last) executing a full unilateral \
exit on the ledger: each node with a CPFP child, then the leaf's reclaim.\n\
- *coordinator CPU*: process CPU time inside coordinator engine calls, its rayon work \
included, the ledger's checks of what it broadcasts excluded.\n\
- *participant CPU*: process CPU time while the participants' drivers ran, all of them \
in parallel on rayon's pool (its idle spinning between jobs is counted too).\n\
- *ledger CPU*: the embedded ledger's libbitcoinkernel checks of the funding transactions.\n\
- *bytes to / from*: encoded message bodies plus a 4-byte frame header each. No QUIC, TLS, \
UDP or IP overhead: the in-memory network does not simulate them.\n\
- *peak memory*: the run's `VmHWM`: coordinator, every participant and the ledger in one \
process, so small runs are dominated by the fixed part.\n\
- *vbytes on chain*: the funding transactions only, per user in a confirmed batch; the \
tree's node transactions reach the chain only when someone exits.\n\
- *exit depth*: transactions on the longest root-to-leaf path of any tree (what the \
deepest exit publishes before its leaf).\n\
- Not measured: the CPU of the setup (keys, deposits) and of the network simulation \
itself, which are in no column; time spent in a real transport.\n";

/// The table of wall time per phase.
fn phase_table(runs: &[Measured]) -> String {
    let mut s = String::from(
        "| users | batches | deposits | registration | tree signing | deposit signing \
         | confirmation | exits | total | simulated |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let p = &r.phase_ms;
        let cells = [
            p.deposits,
            p.registration,
            p.tree_signing,
            p.deposit_signing,
            p.confirmation,
            p.exits,
            r.wall_ms,
            r.simulated_ms,
        ];
        let _ = write!(s, "| {} | {} |", thousands(r.users as u64), r.batches.len());
        for ms in cells {
            let _ = write!(s, " {} |", seconds(ms));
        }
        s += "\n";
    }
    s
}

/// The table of figures per user.
fn per_user_table(runs: &[Measured]) -> String {
    let mut s = String::from(
        "| users | coordinator CPU (ms) | participant CPU (ms) | ledger CPU (ms) \
         | bytes to | bytes from | peak memory (KiB) | vbytes on chain | exit depth |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let participant =
            r.participant_cpu_ms.map_or_else(|| "not measured".to_owned(), |c| sig3(r.per_user(c)));
        let _ = writeln!(
            s,
            "| {} | {} | {participant} | {} | {} | {} | {} | {} | {} |",
            thousands(r.users as u64),
            sig3(r.per_user(r.coordinator_cpu_ms)),
            sig3(r.per_user(r.ledger_cpu_ms)),
            thousands(r.per_user(r.bytes_to_participants).round() as u64),
            thousands(r.per_user(r.bytes_from_participants).round() as u64),
            sig3(r.per_user(r.peak_rss_bytes) / 1024.0),
            sig3(r.vbytes_per_user()),
            r.chain.depth,
        );
    }
    s
}

/// The CSV of every run: one row per size, units in the column names.
pub(super) fn csv(runs: &[Measured]) -> String {
    let mut s = String::from(
        "users,completed,batches,exit_depth,deposits_ms,registration_ms,tree_signing_ms,\
         deposit_signing_ms,confirmation_ms,exits_ms,wall_ms,simulated_ms,\
         coordinator_cpu_ms_per_user,participant_cpu_ms_per_user,ledger_cpu_ms_per_user,\
         bytes_to_participant_per_user,bytes_from_participant_per_user,\
         messages_to_participant_per_user,messages_from_participant_per_user,\
         peak_rss_bytes_per_user,funding_vbytes_per_user,own_outputs_vbytes_per_user\n",
    );
    for r in runs {
        let p = &r.phase_ms;
        let participant = r.participant_cpu_ms.map(|c| r.per_user(c).to_string());
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.users,
            r.completed,
            r.batches.len(),
            r.chain.depth,
            p.deposits,
            p.registration,
            p.tree_signing,
            p.deposit_signing,
            p.confirmation,
            p.exits,
            r.wall_ms,
            r.simulated_ms,
            r.per_user(r.coordinator_cpu_ms),
            participant.unwrap_or_default(),
            r.per_user(r.ledger_cpu_ms),
            r.per_user(r.bytes_to_participants),
            r.per_user(r.bytes_from_participants),
            r.per_user(r.messages_to_participants),
            r.per_user(r.messages_from_participants),
            r.per_user(r.peak_rss_bytes),
            r.vbytes_per_user(),
            r.chain.own_outputs_vbytes as f64 / r.completed.max(1) as f64,
        );
    }
    s
}

/// `x` with three significant digits (no exponent; whole numbers from 100 on).
pub(super) fn sig3(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        thousands(x.round() as u64)
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{x:.2}")
    } else {
        // Two digits more than the leading zeros after the point.
        let zeros = (-a.log10()).floor() as usize;
        format!("{x:.*}", zeros + 2)
    }
}

/// `ms` milliseconds in seconds: to the millisecond below one second (the reports'
/// resolution), three significant digits above.
pub(super) fn seconds(ms: u64) -> String {
    if ms < 1000 {
        format!("{:.3}", ms as f64 / 1e3)
    } else {
        sig3(ms as f64 / 1e3)
    }
}

/// An axis label: `x` with at most three significant digits, no trailing zeros.
pub(super) fn short(x: f64) -> String {
    let s = sig3(x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `n` with a comma every three digits.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// The UTC date of `at` as `YYYY-MM-DD` (the proleptic Gregorian calendar), the date part
/// of [`cohort_common::time::utc_time`].
pub(super) fn utc_date(at: SystemTime) -> String {
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut text = cohort_common::time::utc_time(u64::try_from(ms).unwrap_or(u64::MAX));
    text.truncate("YYYY-MM-DD".len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numbers_read_with_three_significant_digits() {
        assert_eq!(sig3(0.0), "0.00");
        assert_eq!(sig3(0.01234), "0.012");
        assert_eq!(sig3(0.5), "0.50");
        assert_eq!(sig3(4.5678), "4.57");
        assert_eq!(sig3(36.25), "36.2");
        assert_eq!(sig3(460.4), "460");
        assert_eq!(sig3(123_456.7), "123,457");
        assert_eq!(seconds(9), "0.009");
        assert_eq!(seconds(952), "0.952");
        assert_eq!(seconds(45_512), "45.5");
        assert_eq!(seconds(460_400), "460");
        assert_eq!(short(0.01), "0.01");
        assert_eq!(short(1.0), "1");
        assert_eq!(short(20.0), "20");
        assert_eq!(short(0.5), "0.5");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn dates_are_utc_calendar_days() {
        let at = |secs: u64| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_700_000_000), "2023-11-14");
        assert_eq!(at(1_798_761_599), "2026-12-31");
    }

    #[test]
    fn the_notes_are_kept_from_their_heading_on() {
        let old = "# Scaling\n\n| a |\n\n## Notes\n\nThe 100,000 run swapped.\n";
        assert_eq!(notes(old), Some("## Notes\n\nThe 100,000 run swapped.\n"));
        assert_eq!(notes("# Scaling\n\nno notes\n"), None);
    }
}
