//! Joins one round of a `--dev` coordinator as a wallet would, through the library API
//! ([`cohort_participant::client::Client`]): makes (or opens) a wallet, funds its deposit
//! address from the dev faucet, prints each step as it happens, then the outcome.
//!
//! ```text
//! cohort-coordinator run --dev          # prints cohort://<pin>@127.0.0.1:<port>
//! cargo run --release -p cohort-participant --example join_dev -- cohort://... [DATA_DIR]
//! ```
//!
//! The round closes once enough participants registered (or after the coordinator's
//! registration window): run two of these, or a `cohort join` beside it.

use std::path::Path;
use std::sync::Arc;

use bitcoin::Amount;
use cohort_participant::client::{self, Client, JoinRequest};
use cohort_participant::driver::Progress;
use cohort_participant::report::JoinReport;
use cohort_participant::store::{ParticipantStore, SqliteStore};

/// What the example deposits, in sat.
pub const DEPOSIT: Amount = Amount::from_sat(300_000);

/// Any error of the example, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let Some(uri) = args.next() else {
        return Err("usage: join_dev cohort://<pin>@host:port [DATA_DIR]".into());
    };
    let dir = args.next().unwrap_or_else(|| "join-dev-wallet".to_owned());
    println!("waiting for the next round...");
    let report = join_once(&uri, Path::new(&dir), |step| println!("  {step}")).await?;
    println!("{report}");
    Ok(())
}

/// Makes (or opens) the wallet in `dir` for the dev coordinator at `uri`, funds one
/// deposit of [`DEPOSIT`], and joins the next round with it; `on_step` sees every step
/// from the client's progress stream.
pub async fn join_once(
    uri: &str,
    dir: &Path,
    mut on_step: impl FnMut(&Progress) + Send + 'static,
) -> Result<JoinReport, Error> {
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(SqliteStore::open(dir.join("wallet.sqlite"))?);
    // A dev coordinator serves its chain as bitcoind's JSON-RPC on a port it announces:
    // the wallet reaches it with the client it would use for its own node. A wallet on a
    // real chain passes its own node instead (`cohort_participant::chain::NodeChain`).
    let chain = client::dev_chain(uri).await?;
    let client = if store.seed()?.is_some() {
        Client::open(store, chain)?
    } else {
        Client::create(store, chain, uri).await?
    };
    let deposit = client.dev_fund(DEPOSIT).await?;
    println!("funded deposit {deposit}");

    let mut progress = client.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(step) = progress.recv().await {
            on_step(&step);
        }
    });
    let report = client.join(JoinRequest::default()).await;
    // The client owns the stream's sender: dropping it ends the printer.
    drop(client);
    let _ = printer.await;
    Ok(report?)
}
