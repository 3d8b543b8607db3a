//! `cohort-sim`: simulate a Cohort round of N users on the embedded regtest ledger.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use cohort_common::params::{DEFAULT_MAX_BATCH_WEIGHT, DEFAULT_MAX_DEPTH, DEFAULT_RADIX};
use cohort_sim::run::{run, Config};

/// Simulate N users joining Cohort batches on the embedded regtest ledger.
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
    #[arg(long, default_value_t = DEFAULT_MAX_DEPTH)]
    max_depth: u8,
    /// Seed for keys and amounts (nonces are always fresh randomness).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest funding transaction weight, in weight units.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_WEIGHT)]
    max_batch_weight: u64,
    /// How many users execute a full unilateral exit (at least 3 when N allows).
    #[arg(long, default_value_t = 3)]
    exits: usize,
    /// Write `batch.json` (one batch) and `batch-K.json` (every batch) to this directory.
    #[arg(long)]
    export: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config {
        users: args.users,
        radix: args.radix,
        max_depth: args.max_depth,
        seed: args.seed,
        max_batch_weight: args.max_batch_weight,
        exits: args.exits,
        export: args.export,
    };
    let report = run(&config)?;
    print!("{report}");
    Ok(())
}
