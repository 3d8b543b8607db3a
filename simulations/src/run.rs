//! One `cohort-sim` run: N users with confirmed deposits, batches signed locally,
//! funding transactions confirmed on the embedded ledger, sample exits executed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bitcoin::{Amount, FeeRate, OutPoint, TxOut, Txid};
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};

use cohort_common::batch::{group_batches, BatchLimits, MemberSize};
use cohort_common::chain::Chain;
use cohort_common::exit::{p2tr_single, FeeInput};
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::{
    FeeSchedule, LeafOutput, TreeParams, DEFAULT_DEPOSIT_CSV, DEFAULT_EXIT_CSV,
};
use cohort_common::scripts::DepositScript;

use crate::export::{batch_json, write_batches};
use crate::local::{
    build_batch, publish_path, reclaim_leaf, BatchTimings, ExitCost, SignedBatch, User,
};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Users, one deposit each.
    pub users: usize,
    /// Tree shape (radix and largest depth).
    pub tree: TreeParams,
    /// Seed of every key and amount (nonces stay random).
    pub seed: u64,
    /// Largest funding transaction weight.
    pub max_batch_weight: u64,
    /// Users whose full exit is executed.
    pub exits: usize,
    /// Where to write `batch.json` (and `batch-K.json` per batch).
    pub export: Option<PathBuf>,
}

/// What a run measured; `--json` writes it (durations in milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Users.
    pub users: usize,
    /// Batches and their funding txids.
    pub funding_txids: Vec<Txid>,
    /// Longest path of the largest batch, in transactions.
    pub depth: u8,
    /// Node transactions over all batches.
    pub nodes: usize,
    /// Virtual bytes of every funding transaction together.
    pub funding_vbytes: u64,
    /// The same users each paid to their own output in one plain transaction per batch.
    pub baseline_vbytes: u64,
    /// Time to create and confirm the deposits.
    #[serde(rename = "deposits_ms", serialize_with = "as_ms")]
    pub deposits: Duration,
    /// Phases of building the batches.
    pub timings: BatchTimings,
    /// Broadcast and confirmation of the funding transactions.
    #[serde(rename = "confirm_ms", serialize_with = "as_ms")]
    pub confirm: Duration,
    /// Exits executed: user index, nodes published, vbytes.
    #[serde(serialize_with = "exits_as_objects")]
    pub exits: Vec<(usize, ExitCost)>,
    /// Time of the exits.
    #[serde(rename = "exit_time_ms", serialize_with = "as_ms")]
    pub exit_time: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_user = self.funding_vbytes as f64 / self.users as f64;
        let base = self.baseline_vbytes as f64 / self.users as f64;
        writeln!(f, "users              {}", self.users)?;
        writeln!(f, "batches            {}", self.funding_txids.len())?;
        writeln!(f, "tree depth         {}", self.depth)?;
        writeln!(f, "node transactions  {}", self.nodes)?;
        writeln!(f, "funding vbytes     {}", self.funding_vbytes)?;
        writeln!(
            f,
            "vbytes per user    {per_user:.1} on chain (one output per user: {base:.1}, {:.0}% saved)",
            100.0 * (1.0 - per_user / base)
        )?;
        writeln!(f, "phase times")?;
        writeln!(f, "  deposits         {:>9.1} ms", ms(self.deposits))?;
        writeln!(f, "  build tree       {:>9.1} ms", ms(self.timings.build))?;
        writeln!(f, "  sign tree        {:>9.1} ms", ms(self.timings.sign_tree))?;
        writeln!(f, "  sign deposits    {:>9.1} ms", ms(self.timings.sign_deposits))?;
        writeln!(f, "  confirm funding  {:>9.1} ms", ms(self.confirm))?;
        writeln!(f, "  exits            {:>9.1} ms", ms(self.exit_time))?;
        for txid in &self.funding_txids {
            writeln!(f, "funding txid       {txid}")?;
        }
        for (user, cost) in &self.exits {
            writeln!(
                f,
                "exit user {user:<6}   {} node txs published, {} vbytes, leaf reclaimed after exit_csv",
                cost.nodes, cost.vbytes
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration as (fractional) milliseconds.
pub(crate) fn as_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(ms(*d))
}

/// The exits as `{"user", "nodes", "vbytes"}` objects, as the engine runs write them.
fn exits_as_objects<S: Serializer>(exits: &[(usize, ExitCost)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Exit {
        user: usize,
        nodes: usize,
        vbytes: u64,
    }
    s.collect_seq(exits.iter().map(|(user, c)| Exit {
        user: *user,
        nodes: c.nodes,
        vbytes: c.vbytes,
    }))
}

/// Runs the simulation on a fresh embedded ledger.
pub fn run(config: &Config) -> Result<Report> {
    if config.users == 0 {
        bail!("--users must be at least 1");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let ledger = Ledger::new();
    let coordinator = Keypair::from_rng(&mut rng);
    let coordinator_script = p2tr_single(&Keypair::from_rng(&mut rng));
    let schedule = FeeSchedule::default();
    let rate = ledger.fee_rate()?;
    let tree_params = config.tree;
    tree_params.validate()?;

    // Deposits: every user funds its static address from the faucet, one block.
    let start = Instant::now();
    let users = fund_users(&ledger, &mut rng, config.users, &coordinator)?;
    let deposits = start.elapsed();

    // Batches: as many users per funding transaction as the weight and tree allow,
    // grouped as the coordinator's engine groups registrations.
    let limits = BatchLimits {
        max_batch_weight: config.max_batch_weight,
        payout_script_len: coordinator_script.len(),
        tree: tree_params,
    };
    let sizes = users
        .iter()
        .map(|u| MemberSize { inputs: 1, leaves: 1 + usize::from(u.extra_leaf.is_some()) });
    let mut timings = BatchTimings::default();
    let mut batches: Vec<(usize, SignedBatch)> = Vec::new();
    for (k, group) in group_batches(sizes, &limits).into_iter().enumerate() {
        let batch = build_batch(
            &mut rng,
            &users[group.clone()],
            &coordinator,
            &coordinator_script,
            tree_params,
            &schedule,
            DEFAULT_EXIT_CSV,
            &mut timings,
        )
        .with_context(|| format!("batch {k}"))?;
        batches.push((group.start, batch));
    }

    let start = Instant::now();
    let mut funding_txids = Vec::new();
    for (_, batch) in &batches {
        funding_txids.push(
            ledger.broadcast(&batch.funding).context("broadcasting the funding transaction")?,
        );
    }
    ledger.mine(1);
    for txid in &funding_txids {
        if ledger.confirmations(txid)? != Some(1) {
            bail!("funding transaction {txid} did not confirm");
        }
    }
    let confirm = start.elapsed();

    if let Some(dir) = &config.export {
        let docs = (0u32..)
            .zip(&batches)
            .map(|(k, (_, batch))| Ok((k, batch_json(batch)?)))
            .collect::<Result<Vec<_>>>()?;
        write_batches(dir, &docs)?;
    }

    // Exits: first, middle and last users (and more if asked), over all batches.
    let start = Instant::now();
    let exits = exit_sample(&ledger, &batches, &users, &coordinator, config.exits, rate, &mut rng)?;
    let exit_time = start.elapsed();

    let funding_vbytes = batches.iter().map(|(_, b)| b.funding.vsize() as u64).sum();
    let baseline_vbytes = batches.iter().map(|(_, b)| baseline_vbytes(b)).sum();
    Ok(Report {
        users: config.users,
        funding_txids,
        depth: batches.iter().map(|(_, b)| b.tree.shape().depth()).max().unwrap_or(0),
        nodes: batches.iter().map(|(_, b)| b.tree.node_count()).sum(),
        funding_vbytes,
        baseline_vbytes,
        deposits,
        timings,
        confirm,
        exits,
        exit_time,
    })
}

/// Gives `n` users a key, a static deposit address and a confirmed deposit of a random
/// amount (one faucet block); every third also asks for an extra fixed leaf.
pub fn fund_users<R: Rng>(
    ledger: &Ledger,
    rng: &mut R,
    n: usize,
    coordinator: &Keypair,
) -> Result<Vec<User>> {
    let mut users = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let key = Keypair::from_rng(rng);
        let deposit = DepositScript::new(key.public, coordinator.public, DEFAULT_DEPOSIT_CSV)?;
        let amount = Amount::from_sat(rng.gen_range(50_000..2_000_000));
        let extra_leaf = (i % 3 == 2).then(|| LeafOutput {
            script_pubkey: p2tr_single(&Keypair::from_rng(rng)),
            amount: Amount::from_sat(20_000),
        });
        requests.push((deposit.script_pubkey(), amount));
        users.push((key, deposit, amount, extra_leaf));
    }
    let outpoints = ledger.faucet_many(&requests)?;
    Ok(users
        .into_iter()
        .zip(outpoints)
        .map(|((key, deposit, amount, extra_leaf), outpoint)| User {
            txout: TxOut { value: amount, script_pubkey: deposit.script_pubkey() },
            key,
            deposit,
            outpoint,
            extra_leaf,
        })
        .collect())
}

/// Virtual bytes of the same deposits spent in one plain transaction paying every
/// leaf its own output: what Cohort saves against.
fn baseline_vbytes(batch: &SignedBatch) -> u64 {
    let mut tx = batch.funding.clone();
    tx.output = batch
        .tree
        .leaves()
        .iter()
        .map(|l| TxOut { value: l.output.amount, script_pubkey: l.output.script_pubkey.clone() })
        .collect();
    tx.vsize() as u64
}

fn exit_sample<R: Rng>(
    ledger: &Ledger,
    batches: &[(usize, SignedBatch)],
    users: &[User],
    coordinator: &Keypair,
    count: usize,
    rate: FeeRate,
    rng: &mut R,
) -> Result<Vec<(usize, ExitCost)>> {
    let n = users.len();
    let want = count.min(n);
    if want == 0 {
        return Ok(Vec::new());
    }
    let mut chosen: Vec<usize> = vec![0, n / 2, n - 1];
    chosen.dedup();
    chosen.truncate(want);
    // Distinct random users for the rest; a full scan tops up if draws keep colliding.
    for _ in 0..want * 4 {
        if chosen.len() >= want {
            break;
        }
        let pick = rng.gen_range(0..n);
        if !chosen.contains(&pick) {
            chosen.push(pick);
        }
    }
    for user in 0..n {
        if chosen.len() >= want {
            break;
        }
        if !chosen.contains(&user) {
            chosen.push(user);
        }
    }
    chosen.sort_unstable();

    let fee_key = Keypair::from_rng(rng);
    let outpoint: OutPoint = ledger.faucet(&p2tr_single(&fee_key), Amount::from_sat(5_000_000))?;
    let mut fee = FeeInput {
        outpoint,
        txout: TxOut { value: Amount::from_sat(5_000_000), script_pubkey: p2tr_single(&fee_key) },
        key: fee_key,
    };
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for &user in &chosen {
        let (offset, batch) =
            batches.iter().rev().find(|(offset, _)| *offset <= user).context("user in no batch")?;
        let local = user - offset;
        let leaf = batch.remainder_leaf[local];
        let mut cost = ExitCost::default();
        fee = publish_path(ledger, &batch.signed_path(leaf)?, fee, rate, &mut cost)?;
        pending.push((user, batch, leaf, cost));
    }
    // The leaves are virtual deposits: the user alone spends them after exit_csv.
    ledger.mine(u32::from(cohort_common::params::DEFAULT_EXIT_CSV));
    for (user, batch, leaf, mut cost) in pending {
        let tx = reclaim_leaf(
            ledger,
            batch,
            &users[user],
            leaf,
            coordinator,
            cohort_common::params::DEFAULT_EXIT_CSV,
            rate,
        )?;
        cost.vbytes += tx.vsize() as u64;
        results.push((user, cost));
    }
    ledger.mine(1);
    Ok(results)
}
