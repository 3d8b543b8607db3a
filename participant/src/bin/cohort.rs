//! `cohort`: the participant command line (wallet, deposits, rounds, exits).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use bitcoin::Amount;
use clap::{Parser, Subcommand};
use cohort_participant::cli::{self, Context};
use cohort_participant::driver::Outcome;
use serde::Serialize;

/// Cohort participant: batch your deposits with others through a coordinator, and leave
/// on your own whenever you want.
#[derive(Debug, Parser)]
#[command(name = "cohort", version, after_help = EXIT_CODES)]
struct Args {
    /// Where the wallet lives.
    #[arg(long, global = true, default_value = "./cohort-data")]
    data_dir: PathBuf,
    /// Print one JSON object per command instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// What the exit status means, for scripts.
const EXIT_CODES: &str = "Exit status: 0 done (for `join`: the batch confirmed); 1 error; \
2 `join` was refused by the coordinator (nothing signed); 3 `join` ended without a \
confirmed batch (the round failed or the coordinator left; `cohort deposits` shows where \
each deposit stands).";

/// `join`'s exit status when it ended without a confirmed batch (see [`EXIT_CODES`]).
fn join_status(outcome: &Outcome) -> ExitCode {
    match outcome {
        Outcome::Confirmed { .. } => ExitCode::SUCCESS,
        Outcome::Refused { .. } => ExitCode::from(2),
        Outcome::Failed { .. } | Outcome::Disconnected { .. } => ExitCode::from(3),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a wallet for a coordinator (cohort://PIN@HOST:PORT).
    Init {
        /// The coordinator's URI, as it prints on start.
        #[arg(long)]
        coordinator: String,
    },
    /// Show the static deposit address and its descriptor.
    Address,
    /// Look up the address's deposits on the chain.
    Deposits,
    /// Wait for the next round and put every confirmed deposit into it.
    Join {
        /// Reach the coordinator at this URI instead of the remembered one.
        #[arg(long)]
        coordinator: Option<String>,
        /// Largest total fee accepted, in sat.
        #[arg(long)]
        max_fee: Option<u64>,
    },
    /// Deposits, exit paths and recent history.
    Status,
    /// Leave a batch: publish the leaf's exit path and reclaim it.
    Exit {
        /// `<funding_txid>:<leaf>` or the number `cohort status` shows.
        leaf: String,
    },
    /// Spend unspent deposits back through their timeout path.
    Reclaim {
        /// Dev chain: mine until the deposits are spendable.
        #[arg(long)]
        mine: bool,
    },
    /// Dev chain helpers (the coordinator must run with --dev).
    #[command(subcommand)]
    Dev(Dev),
}

#[derive(Debug, Subcommand)]
enum Dev {
    /// Faucet AMOUNT_SAT to the own deposit address (confirmed at once).
    Fund {
        /// Amount in sat.
        amount_sat: u64,
    },
    /// Mine N blocks (1 to 100,000; sent 1,000 per request).
    Mine {
        /// How many.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=100_000))]
        n: u32,
    },
}

/// Prints a report; a closed stdout (`| head`) is not an error worth a panic.
fn print<T: Serialize + std::fmt::Display>(json: bool, report: &T) {
    use std::io::Write;
    let text = if json {
        match serde_json::to_string(report) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return;
            }
        }
    } else {
        report.to_string()
    };
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

async fn run(args: Args) -> Result<ExitCode, cli::CliError> {
    let ctx = Context::new(&args.data_dir);
    let json = args.json;
    match args.command {
        Command::Init { coordinator } => print(json, &cli::init(&ctx, &coordinator).await?),
        Command::Address => print(json, &cli::address(&ctx)?),
        Command::Deposits => print(json, &cli::deposits(&ctx).await?),
        Command::Join { coordinator, max_fee } => {
            if !json {
                print(false, &"waiting for the next round...");
            }
            let report =
                cli::join(&ctx, coordinator.as_deref(), max_fee.map(Amount::from_sat), |p| {
                    if !json {
                        print(false, &format!("  {p}"));
                    }
                    ControlFlow::Continue(())
                })
                .await?;
            print(json, &report);
            return Ok(join_status(&report.outcome));
        }
        Command::Status => print(json, &cli::status(&ctx)?),
        Command::Exit { leaf } => print(json, &cli::exit(&ctx, &leaf).await?),
        Command::Reclaim { mine } => print(json, &cli::reclaim(&ctx, mine).await?),
        Command::Dev(Dev::Fund { amount_sat }) => {
            print(json, &cli::dev_fund(&ctx, Amount::from_sat(amount_sat)).await?)
        }
        Command::Dev(Dev::Mine { n }) => print(json, &cli::dev_mine(&ctx, n).await?),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let json = args.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            if json {
                print(false, &serde_json::json!({ "error": e.to_string() }));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tells_scripts_how_it_ended() {
        let confirmed = Outcome::Confirmed { funding_txid: None, height: 1 };
        let refused = Outcome::Refused { reason: "x".into() };
        let failed = Outcome::Failed { reason: "x".into(), deposits_signed: true };
        assert_eq!(join_status(&confirmed), ExitCode::SUCCESS);
        assert_eq!(join_status(&refused), ExitCode::from(2));
        assert_eq!(join_status(&failed), ExitCode::from(3));
        assert!(EXIT_CODES.contains("2 `join` was refused"));
    }
}
