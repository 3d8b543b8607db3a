//! `cohort-sim`: simulate a Cohort round of N users on the embedded regtest ledger.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};

use cohort_common::batch::BATCH_OUTPUT_SCRIPT_LEN;
use cohort_common::fees::funding_weight;
use cohort_common::params::{
    TreeParams, DEFAULT_MAX_BATCH_WEIGHT, DEFAULT_MAX_DEPTH, DEFAULT_RADIX, MAX_DEPTH_LIMIT,
    MIN_BATCH_WEIGHT,
};
use cohort_common::standard::MAX_STANDARD_WEIGHT;
use cohort_sim::memnet::{Fault, FaultKind, FaultPhase};
use cohort_sim::quic::run_quic_round;
use cohort_sim::round::{round_timeline, run_round, RoundConfig};
use cohort_sim::run::{run, Config};
use cohort_sim::sweep::{run_sweep, SweepConfig, DEFAULT_SIZES, FIGURES_DIR, SCALING_FILE};

/// Simulate N users joining a Cohort round on the embedded regtest ledger.
#[derive(Debug, Parser)]
#[command(name = "cohort-sim", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// Run several sizes instead of one (`cohort-sim sweep --help`).
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Number of users, each with one confirmed deposit.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Tree radix (2..=16).
    #[arg(long, default_value_t = DEFAULT_RADIX, value_parser = clap::value_parser!(u8).range(2..=16))]
    radix: u8,
    /// Largest tree depth (1..=16).
    #[arg(long, default_value_t = DEFAULT_MAX_DEPTH, value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_DEPTH_LIMIT)))]
    max_depth: u8,
    /// Largest funding transaction weight, in weight units.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_WEIGHT)]
    max_batch_weight: u64,
    /// Seed for keys, amounts, faults, the network and the participants' cosigner keys and
    /// nonces (a seeded run is reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of participants that misbehave (0..=1).
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    /// How the faulty participants misbehave.
    #[arg(long, value_enum, default_value_t = KindArg::InvalidSig)]
    fault_kind: KindArg,
    /// In which phase they misbehave.
    #[arg(long, value_enum, default_value_t = PhaseArg::Tree)]
    fault_phase: PhaseArg,
    /// Probability that any message is lost (in-memory transport only: QUIC retransmits).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// How many users execute a full unilateral exit after the round.
    #[arg(long, default_value_t = 3)]
    exits: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write `batch-K.json` per batch (fully signed transactions) to this directory.
    #[arg(long)]
    export: Option<PathBuf>,
    /// How participants reach the coordinator: the in-memory network (simulated time,
    /// faults, loss) or real loopback QUIC to a coordinator service in this process.
    #[arg(long, value_enum, default_value_t = TransportArg::Mem)]
    transport: TransportArg,
    /// Skip the engines: build and sign batches with local keys (the foundation's check).
    #[arg(long)]
    local: bool,
    /// Draw the round's timeline (batches as rows, phases as bars, retries and
    /// exclusions marked) as an SVG to this file, replacing it. In-memory transport only.
    #[arg(long)]
    timeline: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Run the in-memory round at each number of users, each in a fresh process of this
    /// binary (same seed, defaults otherwise), and write SCALING.md with the table, plus
    /// figures/scaling.csv, figures/scaling.json and SVG plots, into --out.
    Sweep(SweepArgs),
}

#[derive(Debug, clap::Args)]
struct SweepArgs {
    /// Numbers of users, comma-separated, increasing.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SIZES)]
    users: Vec<usize>,
    /// Seed of every run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Existing directory to write SCALING.md and figures/ into.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Mem,
    Quic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Drop,
    InvalidSig,
    Timeout,
    LeaveAfter,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PhaseArg {
    Tree,
    Deposit,
}

/// Refuses `--timeline` where no engine events are recorded (it would do nothing), and a
/// path it could not write (before the round, not after it).
fn check_timeline(path: &Path, args: &Args) -> Result<()> {
    if args.local {
        bail!(
            "--timeline {} cannot be drawn with --local: the local run signs batches without \
             the coordinator engine, so there are no round events",
            path.display()
        );
    }
    if matches!(args.transport, TransportArg::Quic) {
        bail!(
            "--timeline {} cannot be drawn with --transport quic: the coordinator service \
             keeps its engine's events to itself; use the in-memory transport",
            path.display()
        );
    }
    check_output_file("--timeline", path)
}

/// Refuses an output file `flag` could not write after the run: in a directory that
/// does not exist, or a directory itself.
fn check_output_file(flag: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("{flag} {}: directory {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        bail!("{flag} {} is a directory, not a file", path.display());
    }
    Ok(())
}

/// Length of the payout scriptPubKey every run gives the coordinator (P2TR).
const PAYOUT_SCRIPT_LEN: usize = 34;

/// The arguments in `matches`, checked: an option that would do nothing in this run is
/// refused (never silently ignored), and so is a setting no round can run with. Runs
/// before any work, so a long run never fails at its end over an option.
fn checked(matches: &ArgMatches) -> Result<Args> {
    let args = Args::from_arg_matches(matches)?;
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    if !(0.0..=1.0).contains(&args.faults) || !(0.0..=1.0).contains(&args.loss) {
        bail!("--faults and --loss must be between 0 and 1");
    }
    if args.local {
        check_local(&given)?;
    } else {
        check_faults(&args, &given)?;
    }
    check_batch_weight(args.max_batch_weight)?;
    if let Some(path) = &args.timeline {
        check_timeline(path, &args)?;
    }
    if let Some(path) = &args.json {
        check_output_file("--json", path)?;
    }
    if let Some(dir) = &args.export {
        check_export(dir)?;
    }
    Ok(args)
}

/// Refuses the options the local run has no use for: it signs every batch with local
/// keys, without a coordinator engine, participants or messages.
fn check_local(given: &dyn Fn(&str) -> bool) -> Result<()> {
    let refused = [
        ("faults", "--faults", "no participant runs, so none can misbehave"),
        ("fault_kind", "--fault-kind", "no participant runs, so none can misbehave"),
        ("fault_phase", "--fault-phase", "no participant runs, so none can misbehave"),
        ("loss", "--loss", "no message is sent, so none can be lost"),
        ("transport", "--transport", "no participant reaches a coordinator"),
    ];
    for (id, flag, why) in refused {
        if given(id) {
            bail!(
                "{flag} cannot be used with --local: the local run signs batches with local \
                 keys, {why}; drop --local to run the engines"
            );
        }
    }
    Ok(())
}

/// Refuses `--fault-kind` and `--fault-phase` when no participant is faulty.
fn check_faults(args: &Args, given: &dyn Fn(&str) -> bool) -> Result<()> {
    if args.faults > 0.0 {
        return Ok(());
    }
    for (id, flag) in [("fault_kind", "--fault-kind"), ("fault_phase", "--fault-phase")] {
        if given(id) {
            bail!("{flag} needs --faults above 0: without it no participant misbehaves");
        }
    }
    Ok(())
}

/// Refuses a funding weight limit outside what a round accepts: below it no batch holds
/// even one user's deposit and the shared part (every user would get a batch of its
/// own), above it the funding transaction is not standard.
fn check_batch_weight(weight: u64) -> Result<()> {
    let one_user = funding_weight(1, &[BATCH_OUTPUT_SCRIPT_LEN, PAYOUT_SCRIPT_LEN]);
    let min = MIN_BATCH_WEIGHT.max(one_user);
    let max = MAX_STANDARD_WEIGHT.to_wu();
    if weight < min {
        bail!(
            "--max-batch-weight {weight} is too small: the smallest allowed is {min} weight \
             units (one user's funding transaction alone weighs {one_user})"
        );
    }
    if weight > max {
        bail!(
            "--max-batch-weight {weight} is too large: the largest allowed is {max} weight \
             units (the standardness limit of a transaction)"
        );
    }
    Ok(())
}

/// Refuses an `--export` path that exists and is not a directory.
fn check_export(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "--export {} is not a directory: the export writes batch-K.json files into a \
             directory (created if missing)",
            dir.display()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = checked(&Args::command().get_matches())?;
    if let Some(Subcommand::Sweep(sweep)) = args.command {
        return run_sweep_command(sweep);
    }
    let tree = TreeParams { radix: args.radix, max_depth: args.max_depth };
    if args.local {
        let report = run(&Config {
            users: args.users,
            tree,
            seed: args.seed,
            max_batch_weight: args.max_batch_weight,
            exits: args.exits,
            export: args.export,
        })?;
        print!("{report}");
        if let Some(path) = &args.json {
            write_json(path, &report)?;
        }
        return Ok(());
    }
    let kind = match args.fault_kind {
        KindArg::Drop => FaultKind::Drop,
        KindArg::InvalidSig => FaultKind::InvalidSig,
        KindArg::Timeout => FaultKind::Timeout,
        KindArg::LeaveAfter => FaultKind::LeaveAfter,
    };
    let phase = match args.fault_phase {
        PhaseArg::Tree => FaultPhase::Tree,
        PhaseArg::Deposit => FaultPhase::Deposit,
    };
    let config = RoundConfig {
        users: args.users,
        tree,
        max_batch_weight: args.max_batch_weight,
        seed: args.seed,
        faults: args.faults,
        fault: (args.faults > 0.0).then_some(Fault { kind, phase }),
        loss: args.loss,
        exits: args.exits,
        export: args.export,
        progress: true,
    };
    let report = match args.transport {
        TransportArg::Mem => {
            let outcome = run_round(&config)?;
            let mut report = outcome.report;
            if let Some(path) = args.timeline {
                let timeline = round_timeline(&outcome.net.events)
                    .context("the coordinator recorded no round to draw")?;
                std::fs::write(&path, timeline.svg())
                    .with_context(|| format!("writing the timeline to {}", path.display()))?;
                report.timeline = Some(path);
            }
            report
        }
        TransportArg::Quic => run_quic_round(&config)?,
    };
    print!("{report}");
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// `cohort-sim sweep`: every size in a child process of this very binary (the sizes and
/// the output directory are checked before the first).
fn run_sweep_command(args: SweepArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding this binary to run each size with")?;
    let command = std::iter::once("cohort-sim".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let config = SweepConfig { sizes: args.users, seed: args.seed, out: args.out, command };
    let runs = run_sweep(&config, &exe)?;
    println!(
        "{} sizes written to {} and {}",
        runs.len(),
        config.out.join(SCALING_FILE).display(),
        config.out.join(FIGURES_DIR).display()
    );
    Ok(())
}

/// Writes `report` as pretty JSON to `path`, replacing it.
fn write_json(path: &Path, report: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `argv` (without the program name) parsed and checked as `main` does.
    fn check(argv: &[&str]) -> Result<Args> {
        let argv = std::iter::once("cohort-sim").chain(argv.iter().copied());
        checked(&Args::command().try_get_matches_from(argv)?)
    }

    /// The message `argv` is refused with.
    fn refusal(argv: &[&str]) -> String {
        format!("{:#}", check(argv).expect_err("refused"))
    }

    #[test]
    fn the_local_run_refuses_the_engine_options() {
        for (argv, flag) in [
            (&["--local", "--faults", "0.1"][..], "--faults"),
            (&["--local", "--faults", "0"], "--faults"),
            (&["--local", "--loss", "0.01"], "--loss"),
            (&["--local", "--fault-kind", "drop"], "--fault-kind"),
            (&["--local", "--fault-phase", "deposit"], "--fault-phase"),
            (&["--local", "--transport", "quic"], "--transport"),
            (&["--local", "--transport", "mem"], "--transport"),
        ] {
            let message = refusal(argv);
            assert!(
                message.starts_with(&format!("{flag} cannot be used with --local")),
                "{message}"
            );
        }
        assert!(check(&["--local", "--users", "3", "--json", "r.json"]).is_ok());
    }

    #[test]
    fn a_fault_kind_or_phase_without_faults_is_refused() {
        for flag in ["--fault-kind", "--fault-phase"] {
            let value = if flag == "--fault-kind" { "timeout" } else { "deposit" };
            let message = refusal(&[flag, value]);
            assert!(message.contains(&format!("{flag} needs --faults above 0")), "{message}");
            assert!(check(&["--faults", "0.1", flag, value]).is_ok());
        }
        // The defaults alone are no option given.
        assert!(check(&["--users", "3"]).is_ok());
    }

    #[test]
    fn a_batch_weight_that_holds_no_user_is_refused_naming_the_smallest() {
        for weight in ["0", "1", "616", "1999"] {
            let message = refusal(&["--max-batch-weight", weight]);
            assert!(
                message.contains(&format!("--max-batch-weight {weight} is too small"))
                    && message.contains("the smallest allowed is 2000"),
                "{message}"
            );
            let message = refusal(&["--local", "--max-batch-weight", weight]);
            assert!(message.contains("the smallest allowed is 2000"), "{message}");
        }
        let message = refusal(&["--max-batch-weight", "400001"]);
        assert!(message.contains("the largest allowed is 400000"), "{message}");
        assert!(check(&["--max-batch-weight", "2000"]).is_ok());
        assert!(check(&["--max-batch-weight", "400000"]).is_ok());
    }

    #[test]
    fn an_export_onto_a_file_is_refused_naming_it() {
        let file =
            std::env::temp_dir().join(format!("cohort-sim-export-file-{}", std::process::id()));
        std::fs::write(&file, "not a directory").expect("temp file");
        let path = file.display().to_string();
        for argv in [&["--export", &path][..], &["--local", "--export", &path]] {
            let message = refusal(argv);
            assert!(message.contains(&format!("--export {path} is not a directory")), "{message}");
        }
        std::fs::remove_file(&file).ok();
        // A directory that does not exist yet is created by the export.
        assert!(check(&["--export", &path]).is_ok());
    }

    #[test]
    fn a_json_path_that_cannot_be_written_is_refused_before_the_run() {
        let missing = std::env::temp_dir().join("cohort-sim-no-such-dir").join("r.json");
        let missing = missing.display().to_string();
        for argv in [&["--json", &missing][..], &["--local", "--json", &missing]] {
            let message = refusal(argv);
            assert!(message.starts_with(&format!("--json {missing}: directory")), "{message}");
        }
        let dir = std::env::temp_dir().display().to_string();
        let message = refusal(&["--local", "--json", &dir]);
        assert!(message.contains("is a directory, not a file"), "{message}");
    }

    #[test]
    fn a_depth_no_round_accepts_is_refused_by_the_parser_naming_the_flag() {
        let message = refusal(&["--max-depth", "17"]);
        assert!(message.contains("--max-depth") && message.contains("1..=16"), "{message}");
        assert!(check(&["--local", "--max-depth", "16"]).is_ok());
    }
}
