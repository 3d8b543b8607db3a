//! `cohort-sim`: simulate a Cohort round of N users on the embedded regtest ledger.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use cohort_common::params::{
    TreeParams, DEFAULT_MAX_BATCH_WEIGHT, DEFAULT_MAX_DEPTH, DEFAULT_RADIX,
};
use cohort_sim::memnet::{Fault, FaultKind, FaultPhase};
use cohort_sim::quic::run_quic_round;
use cohort_sim::round::{round_timeline, run_round, RoundConfig};
use cohort_sim::run::{run, Config};

/// Simulate N users joining a Cohort round on the embedded regtest ledger.
#[derive(Debug, Parser)]
#[command(name = "cohort-sim", version)]
struct Args {
    /// Number of users, each with one confirmed deposit.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Tree radix (2..=16).
    #[arg(long, default_value_t = DEFAULT_RADIX, value_parser = clap::value_parser!(u8).range(2..=16))]
    radix: u8,
    /// Largest tree depth.
    #[arg(long, default_value_t = DEFAULT_MAX_DEPTH, value_parser = clap::value_parser!(u8).range(1..=32))]
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
    /// Probability that any message is lost.
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
/// path whose directory does not exist (before the round, not after it).
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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("--timeline {}: directory {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        bail!("--timeline {} is a directory, not a file", path.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.faults) || !(0.0..=1.0).contains(&args.loss) {
        anyhow::bail!("--faults and --loss must be between 0 and 1");
    }
    let tree = TreeParams { radix: args.radix, max_depth: args.max_depth };
    if let Some(path) = &args.timeline {
        check_timeline(path, &args)?;
    }
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
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
