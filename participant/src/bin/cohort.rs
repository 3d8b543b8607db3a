//! `cohort`: the participant command line (wallet, deposits, rounds, exits).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use bitcoin::Amount;
use clap::{Parser, Subcommand};
use cohort_participant::cli::{self, Context};
use cohort_participant::driver::{Outcome, SignGate};
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
    /// The chain source: `node` (your own bitcoind) or `coordinator-dev` (a --dev
    /// coordinator's chain). Chosen at `init` and stored; given to a later command that
    /// uses the chain, it replaces the stored one.
    #[arg(long, global = true, value_parser = ["node", "coordinator-dev"])]
    chain: Option<String>,
    /// Your node's RPC URL (default http://127.0.0.1:<the network's RPC port>); implies
    /// --chain node.
    #[arg(long, global = true)]
    bitcoind_url: Option<String>,
    /// Your node's .cookie file.
    #[arg(long, global = true, conflicts_with = "bitcoind_datadir")]
    bitcoind_cookie: Option<PathBuf>,
    /// Your node's data directory, for its cookie (default ~/.bitcoin).
    #[arg(long, global = true)]
    bitcoind_datadir: Option<PathBuf>,
    /// Your node's RPC user (with --bitcoind-password, instead of a cookie).
    #[arg(long, global = true, requires = "bitcoind_password")]
    bitcoind_user: Option<String>,
    /// Your node's RPC password.
    #[arg(long, global = true, requires = "bitcoind_user")]
    bitcoind_password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// What the exit status means, for scripts.
const EXIT_CODES: &str = "Exit status: 0 done (for `join`: the batch confirmed); 1 error; \
2 `join` was refused by the coordinator (nothing signed); 3 `join` ended without a \
confirmed batch (the round failed, the coordinator left, or the wallet's own chain source \
does not show the batch confirmed; `cohort deposits` shows where each deposit stands); \
4 `join` was cancelled with Ctrl-C before any deposit signature (nothing signed; after \
deposit signatures Ctrl-C waits for the batch, and a second Ctrl-C stops at once).";

/// `join`'s exit status (see [`EXIT_CODES`]): a batch the coordinator calls confirmed
/// but the wallet's own chain source does not show confirmed did not end well.
fn join_status(outcome: &Outcome, own_confirmed: bool) -> ExitCode {
    match outcome {
        Outcome::Confirmed { .. } if own_confirmed => ExitCode::SUCCESS,
        Outcome::Confirmed { .. } => ExitCode::from(3),
        Outcome::Refused { .. } => ExitCode::from(2),
        Outcome::Failed { .. } | Outcome::Disconnected { .. } => ExitCode::from(3),
        Outcome::Cancelled { .. } => ExitCode::from(4),
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
        /// Largest total fee accepted, in sat (default 50,000).
        #[arg(long)]
        max_fee: Option<u64>,
        /// Most transactions on an own exit path: a deeper batch is refused unsigned
        /// (default 16).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=16))]
        max_depth: Option<u8>,
    },
    /// Deposits, exit paths and recent history.
    Status,
    /// Follow the wallet's deposits and batches on its own chain source and say what needs
    /// attention (a deposit expiring, a batch not confirming, a coordinator alarm, a tree
    /// node published by someone else), each time it changes.
    Watch {
        /// Seconds between two looks.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        interval: u64,
        /// Look once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Leave a batch: publish the leaf's exit path and reclaim it.
    Exit {
        /// `<funding_txid>:<leaf>` or the number `cohort status` shows.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        leaf: Option<String>,
        /// Every leaf not exited yet.
        #[arg(long)]
        all: bool,
        /// Package fee rate of the CPFP children in sat/vB (default: the chain source's
        /// estimate, capped by --max-fee-rate).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        fee_rate: Option<u64>,
        /// The highest rate a child pays, in sat/vB: a higher estimate is cut down to it,
        /// and a child that does not confirm is never replaced above it (default 500).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_fee_rate: Option<u64>,
        /// Mine every block the exit waits for, and finish (a dev chain or a regtest node).
        #[arg(long)]
        mine: bool,
    },
    /// Spend deposits to an address now, co-signed by the coordinator (no timeout to wait
    /// for), or replace such a withdrawal at a higher fee (--bump).
    Withdraw {
        /// Where to send them: an address on the wallet's network.
        #[arg(required_unless_present = "bump", conflicts_with = "bump")]
        address: Option<String>,
        /// Withdraw only this deposit (TXID:VOUT; repeat for several). Default: every
        /// confirmed deposit not in a round or a withdrawal.
        #[arg(long = "deposit", value_name = "OUTPOINT", conflicts_with = "bump")]
        deposits: Vec<String>,
        /// Fee rate in sat/vB (default: the chain source's estimate).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        fee_rate: Option<u64>,
        /// Refuse to pay a fee rate above this, in sat/vB (default 500).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_fee_rate: Option<u64>,
        /// Replace the withdrawal TXID (not confirmed yet) with the same deposits and
        /// address at a higher fee.
        #[arg(long, value_name = "TXID")]
        bump: Option<String>,
    },
    /// Pay the wallet's own coins (what exits and reclaims paid it, and its fee wallet)
    /// to an address.
    Send {
        /// Where to: an address on the wallet's network.
        address: String,
        /// How much, in sat.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        amount: Option<u64>,
        /// Everything, less the fee.
        #[arg(long)]
        all: bool,
        /// Fee rate in sat/vB (default: the chain source's estimate).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        fee_rate: Option<u64>,
        /// Refuse to pay a fee rate above this, in sat/vB (default 500).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_fee_rate: Option<u64>,
    },
    /// Spend unspent deposits back through their timeout path.
    Reclaim {
        /// Mine until the deposits are spendable (a dev chain or a regtest node).
        #[arg(long)]
        mine: bool,
    },
    /// Dev chain helpers (a --dev coordinator's chain; `dev mine` also on a regtest node).
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
    /// Mine N blocks (1 to 100,000; to a dev coordinator 1,000 per request).
    Mine {
        /// How many.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=100_000))]
        n: u32,
    },
}

/// Ctrl-C during `join`: cancels the round before deposit signatures; after them, says
/// the round goes on, and a second Ctrl-C stops the process at once (the stored exit
/// paths keep the deposits safe either way).
async fn cancel_on_ctrl_c(gate: SignGate) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    match gate.cancel() {
        Ok(()) => eprintln!("cancelling: no deposit signature was sent"),
        Err(e) => eprintln!("{e}; waiting for the batch (Ctrl-C again stops at once)"),
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
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
    let chain = match args.chain.as_deref().map(str::parse).transpose() {
        Ok(chain) => chain,
        Err(why) => return Err(cli::CliError::ChainSettings(why)),
    };
    let ctx = Context::new(&args.data_dir).with_chain(cli::ChainArgs {
        chain,
        bitcoind_url: args.bitcoind_url,
        bitcoind_cookie: args.bitcoind_cookie,
        bitcoind_datadir: args.bitcoind_datadir,
        bitcoind_user: args.bitcoind_user,
        bitcoind_password: args.bitcoind_password,
    });
    let json = args.json;
    match args.command {
        Command::Init { coordinator } => print(json, &cli::init(&ctx, &coordinator).await?),
        Command::Address => print(json, &cli::address(&ctx)?),
        Command::Deposits => print(json, &cli::deposits(&ctx).await?),
        Command::Join { coordinator, max_fee, max_depth } => {
            if !json {
                print(
                    false,
                    &"waiting for the next round... (Ctrl-C cancels before deposit signatures)",
                );
            }
            let args =
                cli::JoinArgs { coordinator, max_fee: max_fee.map(Amount::from_sat), max_depth };
            let gate = SignGate::new();
            let signals = tokio::spawn(cancel_on_ctrl_c(gate.clone()));
            let report = cli::join_cancellable(&ctx, &args, &gate, |p| {
                if !json {
                    print(false, &format!("  {p}"));
                }
                ControlFlow::Continue(())
            })
            .await;
            signals.abort();
            let report = report?;
            print(json, &report);
            return Ok(join_status(&report.outcome, report.confirmed()));
        }
        Command::Status => print(json, &cli::status(&ctx)?),
        Command::Watch { interval, once } => {
            let mut last = None;
            loop {
                let report = cli::watch(&ctx).await?;
                if last.as_ref() != Some(&report.advice) {
                    print(json, &report);
                }
                if once {
                    break;
                }
                last = Some(report.advice);
                tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
            }
        }
        Command::Exit { leaf, fee_rate, max_fee_rate, mine, .. } => {
            let args = cli::ExitArgs { fee_rate, max_fee_rate, mine };
            match leaf {
                Some(leaf) => print(json, &cli::exit(&ctx, &leaf, &args).await?),
                None => print(json, &cli::exit_all(&ctx, &args).await?),
            }
        }
        Command::Withdraw { address, deposits, fee_rate, max_fee_rate, bump } => {
            let args = cli::WithdrawArgs { address, deposits, fee_rate, max_fee_rate, bump };
            print(json, &cli::withdraw(&ctx, &args).await?)
        }
        Command::Send { address, amount, all: _, fee_rate, max_fee_rate } => {
            let amount = amount.map(Amount::from_sat);
            print(json, &cli::send(&ctx, &address, amount, fee_rate, max_fee_rate).await?)
        }
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
    use cohort_participant::session::PhaseName;

    #[test]
    fn join_tells_scripts_how_it_ended() {
        let confirmed = Outcome::Confirmed { funding_txid: None, height: 1 };
        let refused = Outcome::Refused { reason: "x".into() };
        let failed = Outcome::Failed { reason: "x".into(), deposits_signed: true };
        let cancelled = Outcome::Cancelled { phase: PhaseName::AwaitingProposal };
        assert_eq!(join_status(&confirmed, true), ExitCode::SUCCESS);
        assert_eq!(join_status(&confirmed, false), ExitCode::from(3));
        assert_eq!(join_status(&refused, false), ExitCode::from(2));
        assert_eq!(join_status(&failed, false), ExitCode::from(3));
        assert_eq!(join_status(&cancelled, false), ExitCode::from(4));
        assert!(EXIT_CODES.contains("2 `join` was refused"));
    }
}
