//! Leaving without the coordinator: publish a stored exit path node by node (each with a
//! CPFP child paying through its anchor), then reclaim the leaf after its timeout; and
//! reclaim static deposits through their timeout path.
//!
//! The chain is the wallet's own chain source ([`ChainSource`]: its node, or a dev
//! coordinator's chain); the coordinator is never needed. The `_dev` variants take a
//! [`DevChain`] and mine the blocks they wait for, in one call; the others publish what
//! they can and say at which height to come back.

use bitcoin::{Amount, FeeRate, OutPoint, Transaction, TxOut, Txid};
use cohort_common::exit::{cpfp_child, reclaim_tx, ExitError, FeeInput};
use cohort_common::messages::UtxoInfo;
use cohort_common::scripts::{DepositScript, ScriptError};
use serde::Serialize;

use crate::chain::{ChainSource, ChainSourceError, DevChain, NoDevChain};
use crate::driver::{now_ms, StepName};
use crate::store::{DepositStatus, ExitChildRecord, HistoryEvent, ParticipantStore, StoreError};
use crate::wallet::Wallet;
use crate::withdraw::{DEFAULT_MAX_FEE_RATE_SAT_VB, INCREMENTAL_RELAY};

/// What the dev faucet sends the fee key when it has no usable output.
pub const FEE_FAUCET_AMOUNT: Amount = Amount::from_sat(100_000);

/// Errors of the exit and reclaim tools.
#[derive(Debug, thiserror::Error)]
pub enum ExitToolError {
    /// No stored exit path for that leaf.
    #[error("no stored exit path for leaf {leaf} of funding tx {funding_txid}")]
    UnknownLeaf {
        /// The batch.
        funding_txid: Txid,
        /// The leaf.
        leaf: u32,
    },
    /// The leaf was already exited.
    #[error("leaf {leaf} of funding tx {funding_txid} was already exited")]
    AlreadyExited {
        /// The batch.
        funding_txid: Txid,
        /// The leaf.
        leaf: u32,
    },
    /// The batch's funding transaction is not on the chain.
    #[error("funding tx {0} is not on the chain yet: wait for the batch to confirm")]
    FundingMissing(Txid),
    /// A stored record is inconsistent with the wallet.
    #[error("stored record does not match the wallet: {0}")]
    Mismatch(String),
    /// No fee output to pay CPFP children, and no faucet to get one.
    #[error("no confirmed output of at least {needed} on the fee address {script}; fund it")]
    NoFeeInput {
        /// The fee key's script (hex).
        script: String,
        /// A sensible minimum.
        needed: Amount,
    },
    /// A transaction could not be built.
    #[error("building a transaction: {0}")]
    Build(#[from] ExitError),
    /// A script could not be built.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// Height arithmetic overflowed.
    #[error("height overflow")]
    Overflow,
    /// The chain source failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainSourceError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// How an exit prices the CPFP children of its tree nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitFees {
    /// The package rate to pay; `None`: the chain source's estimate.
    pub fee_rate: Option<FeeRate>,
    /// The highest package rate any child may pay: an estimate above it is cut down to
    /// it (and the report says so), and a child is never replaced above it.
    pub max_fee_rate: FeeRate,
}

impl Default for ExitFees {
    /// The chain's estimate, capped at [`DEFAULT_MAX_FEE_RATE_SAT_VB`].
    fn default() -> Self {
        ExitFees {
            fee_rate: None,
            max_fee_rate: FeeRate::from_sat_per_kwu(DEFAULT_MAX_FEE_RATE_SAT_VB * 250),
        }
    }
}

/// What `exit` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitReport {
    /// The batch.
    pub funding_txid: Txid,
    /// The leaf.
    pub leaf: u32,
    /// The leaf's amount, in sat.
    pub amount_sat: u64,
    /// Node transactions published now (with a CPFP child each).
    pub published: Vec<Txid>,
    /// Nodes whose CPFP child this wallet published before and replaced now, at a
    /// higher rate, because a block passed without it or the rate asked for rose.
    pub replaced: Vec<Txid>,
    /// A node waiting in the mempool with a child this wallet did not publish (another
    /// user of the batch published it), if any.
    pub published_by_others: Option<Txid>,
    /// The package rate new children pay, in sat/vB.
    pub fee_rate_sat_vb: u64,
    /// The chain's estimate in sat/vB, when it was above the cap and the cap was paid.
    pub capped_from_sat_vb: Option<u64>,
    /// Node transactions already confirmed.
    pub already_confirmed: usize,
    /// The leaf output, once its node is confirmed.
    pub leaf_outpoint: Option<OutPoint>,
    /// The reclaim transaction of the leaf, if it was spent to the wallet.
    pub reclaim_txid: Option<Txid>,
    /// While not finished: the height from which the next step can go on.
    pub waiting_for_height: Option<u32>,
    /// Whether the path is now marked exited.
    pub exited: bool,
}

fn history(store: &dyn ParticipantStore, step: StepName, detail: String) -> Result<(), StoreError> {
    let kind = step.as_str().to_owned();
    store.append_history(&HistoryEvent { at_ms: now_ms(), round: None, kind, detail })
}

/// The first height whose block may include a spend of an output confirmed at `height`
/// with relative timelock `csv` (BIP-68).
pub fn spendable_at(height: u32, csv: u16) -> Option<u32> {
    height.checked_add(u32::from(csv))
}

/// A confirmed fee-key output able to pay a CPFP child; on dev, fetched from the faucet.
async fn fee_input<C: ChainSource, D: DevChain>(
    chain: &C,
    dev: Option<&D>,
    wallet: &Wallet,
) -> Result<FeeInput, ExitToolError> {
    let script = wallet.fee_script();
    let best = chain
        .script_utxos(&script)
        .await?
        .into_iter()
        .filter(|u| u.height.is_some() && u.txout.value >= FEE_FAUCET_AMOUNT / 10)
        .max_by_key(|u| u.txout.value);
    let (outpoint, txout) = match (best, dev) {
        (Some(u), _) => (u.outpoint, u.txout),
        (None, Some(dev)) => {
            let outpoint = dev.faucet(&script, FEE_FAUCET_AMOUNT).await?;
            (outpoint, TxOut { value: FEE_FAUCET_AMOUNT, script_pubkey: script })
        }
        (None, None) => {
            return Err(ExitToolError::NoFeeInput {
                script: hex::encode(script.as_bytes()),
                needed: FEE_FAUCET_AMOUNT / 10,
            })
        }
    };
    Ok(FeeInput { outpoint, txout, key: wallet.fee_key() })
}

/// Publishes the stored exit path of `leaf` in batch `funding_txid` and, for a leaf paying
/// one of our keys, spends it to the fee key once its timeout has passed. It goes as far
/// as the chain allows and says at which height to call it again.
pub async fn exit_leaf<C: ChainSource>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &C,
    funding_txid: Txid,
    leaf: u32,
    fees: ExitFees,
) -> Result<ExitReport, ExitToolError> {
    exit_with(store, wallet, chain, None::<&NoDevChain>, (funding_txid, leaf), fees).await
}

/// As [`exit_leaf`] on a dev chain: it mines every block it waits for (and takes the
/// CPFP children's fee output from the faucet if need be) and finishes in one call.
pub async fn exit_leaf_dev<D: DevChain>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &D,
    funding_txid: Txid,
    leaf: u32,
    fees: ExitFees,
) -> Result<ExitReport, ExitToolError> {
    exit_with(store, wallet, chain, Some(chain), (funding_txid, leaf), fees).await
}

async fn exit_with<C: ChainSource, D: DevChain>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &C,
    dev: Option<&D>,
    (funding_txid, leaf): (Txid, u32),
    fees: ExitFees,
) -> Result<ExitReport, ExitToolError> {
    let record = store
        .exit_path(&funding_txid, leaf)?
        .ok_or(ExitToolError::UnknownLeaf { funding_txid, leaf })?;
    if store.is_exited(&funding_txid, leaf)? {
        return Err(ExitToolError::AlreadyExited { funding_txid, leaf });
    }
    let mut report = ExitReport {
        funding_txid,
        leaf,
        amount_sat: record.leaf_output.value.to_sat(),
        published: Vec::new(),
        replaced: Vec::new(),
        published_by_others: None,
        fee_rate_sat_vb: 0,
        capped_from_sat_vb: None,
        already_confirmed: 0,
        leaf_outpoint: None,
        reclaim_txid: None,
        waiting_for_height: None,
        exited: false,
    };
    match chain.confirmations(funding_txid).await? {
        None => return Err(ExitToolError::FundingMissing(funding_txid)),
        Some(0) if dev.is_some() => {
            mine(dev, 1).await?;
        }
        Some(0) => {
            report.waiting_for_height = Some(chain.tip_height().await?.saturating_add(1));
            return Ok(report);
        }
        Some(_) => {}
    }
    let rate = match fees.fee_rate {
        Some(rate) => rate,
        None => chain.fee_rate().await?,
    };
    let rate = if rate > fees.max_fee_rate {
        report.capped_from_sat_vb = Some(sat_vb(rate));
        fees.max_fee_rate
    } else {
        rate
    };
    report.fee_rate_sat_vb = sat_vb(rate);
    for tx in &record.path {
        let txid = tx.compute_txid();
        match chain.confirmations(txid).await? {
            Some(n) if n >= 1 => {
                report.already_confirmed += 1;
                continue;
            }
            // In the mempool: carried by our child (replaced if it is not confirming) or
            // by another user's.
            Some(_) => match replace_child(store, wallet, chain, tx, rate, fees).await? {
                Carried::Replaced => {
                    report.replaced.push(txid);
                    history(
                        store,
                        StepName::ExitBroadcast,
                        format!("node {txid} of leaf {leaf} in {funding_txid}: child replaced"),
                    )?;
                }
                Carried::ByOthers => report.published_by_others = Some(txid),
                Carried::Waiting => {}
            },
            None => {
                let fee = fee_input(chain, dev, wallet).await?;
                let child = cpfp_child(tx, &fee, rate)?;
                let height = chain.tip_height().await?;
                // Kept before it is sent, so that it can be replaced after a crash.
                store.put_exit_child(&ExitChildRecord {
                    node_txid: txid,
                    child: child.clone(),
                    fee_input_value: fee.txout.value,
                    height,
                })?;
                chain.broadcast_package(tx, &child).await?;
                report.published.push(txid);
                history(
                    store,
                    StepName::ExitBroadcast,
                    format!("node {txid} of leaf {leaf} in {funding_txid}"),
                )?;
            }
        }
        if dev.is_none() {
            // A TRUC node cannot get its own child while its parent's child is unconfirmed.
            report.waiting_for_height = Some(chain.tip_height().await?.saturating_add(1));
            return Ok(report);
        }
        mine(dev, 1).await?;
    }
    let last = record.path.last().ok_or_else(|| {
        ExitToolError::Mismatch(format!("exit path of leaf {leaf} has no transaction"))
    })?;
    let outpoint = OutPoint { txid: last.compute_txid(), vout: record.vout };
    report.leaf_outpoint = Some(outpoint);
    let (Some(index), Some(csv)) = (record.leaf_key_index, record.exit_csv) else {
        // A fixed leaf paying someone else's script: on chain is all we can do.
        store.mark_exited(&funding_txid, leaf)?;
        history(
            store,
            StepName::Exited,
            format!("leaf {leaf} of {funding_txid} is on chain at {outpoint}"),
        )?;
        report.exited = true;
        return Ok(report);
    };
    let key = wallet.leaf_key(index);
    let script = DepositScript::virtual_deposit(key.public, wallet.coordinator().key, csv)?;
    if script.script_pubkey() != record.leaf_output.script_pubkey {
        return Err(ExitToolError::Mismatch(format!(
            "leaf {leaf} does not pay the virtual-deposit script of leaf key {index}"
        )));
    }
    let Some(utxo) = chain.utxo(outpoint).await? else {
        return Err(ExitToolError::Mismatch(format!("leaf output {outpoint} is not unspent")));
    };
    let Some(height) = utxo.height else {
        report.waiting_for_height = Some(chain.tip_height().await?.saturating_add(1));
        return Ok(report);
    };
    let ready = spendable_at(height, csv).ok_or(ExitToolError::Overflow)?;
    let tip = chain.tip_height().await?;
    if tip.saturating_add(1) < ready {
        if dev.is_none() {
            report.waiting_for_height = Some(ready);
            return Ok(report);
        }
        mine(dev, ready - tip - 1).await?;
    }
    let tx = reclaim_tx(&script, &key, outpoint, &record.leaf_output, wallet.fee_script(), rate)?;
    let txid = chain.broadcast(&tx).await?;
    mine(dev, 1).await?;
    store.mark_exited(&funding_txid, leaf)?;
    history(store, StepName::Exited, format!("leaf {leaf} of {funding_txid} reclaimed by {txid}"))?;
    report.reclaim_txid = Some(txid);
    report.exited = true;
    Ok(report)
}

/// A rate in whole sat/vB, rounded up.
fn sat_vb(rate: FeeRate) -> u64 {
    rate.to_sat_per_kwu().div_ceil(250)
}

/// Who carries a tree node waiting in the mempool.
enum Carried {
    /// Our child, replaced now at a higher rate.
    Replaced,
    /// Our child, left as it is: no block has passed since it was published and the rate
    /// asked for is not above what it pays (or a replacement would pass the cap).
    Waiting,
    /// A child this wallet did not publish.
    ByOthers,
}

/// For `node` waiting in the mempool: replaces the CPFP child this wallet published for
/// it when a block has passed without it confirming, or when `rate` is above what it
/// pays. The replacement spends the same fee output, pays at least `rate` and at least
/// the old fee plus [`INCREMENTAL_RELAY`] on its own size (the replacement rules), and
/// never more than the cap.
async fn replace_child<C: ChainSource>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &C,
    node: &Transaction,
    rate: FeeRate,
    fees: ExitFees,
) -> Result<Carried, ExitToolError> {
    let txid = node.compute_txid();
    let Some(old) = store.exit_child(&txid)? else { return Ok(Carried::ByOthers) };
    if chain.confirmations(old.child.compute_txid()).await? != Some(0) {
        return Ok(Carried::ByOthers);
    }
    let old_fee = old.fee().ok_or_else(|| {
        ExitToolError::Mismatch(format!("stored child of node {txid} pays more than its input"))
    })?;
    let package = (node.weight() + old.child.weight()).to_vbytes_ceil();
    let old_rate = FeeRate::from_sat_per_kwu(old_fee.to_sat().saturating_mul(250) / package);
    let tip = chain.tip_height().await?;
    if tip <= old.height && rate <= old_rate {
        return Ok(Carried::Waiting);
    }
    let increment =
        INCREMENTAL_RELAY.fee_vb(old.child.vsize() as u64).ok_or(ExitToolError::Overflow)?;
    let least = old_fee.checked_add(increment).ok_or(ExitToolError::Overflow)?;
    let least_rate =
        FeeRate::from_sat_per_kwu(least.to_sat().saturating_mul(250).div_ceil(package));
    let new_rate = rate.max(least_rate);
    if new_rate > fees.max_fee_rate {
        return Ok(Carried::Waiting);
    }
    let fee = FeeInput {
        outpoint: old.child.input[1].previous_output,
        txout: TxOut { value: old.fee_input_value, script_pubkey: wallet.fee_script() },
        key: wallet.fee_key(),
    };
    let child = cpfp_child(node, &fee, new_rate)?;
    store.put_exit_child(&ExitChildRecord {
        node_txid: txid,
        child: child.clone(),
        fee_input_value: old.fee_input_value,
        height: tip,
    })?;
    if let Err(e) = chain.broadcast_package(node, &child).await {
        // The old child still carries the node: keep it as the one to replace.
        store.put_exit_child(&old)?;
        return Err(e.into());
    }
    Ok(Carried::Replaced)
}

/// What `reclaim` did with one deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReclaimItem {
    /// Spent back to the fee key.
    Reclaimed {
        /// The deposit.
        outpoint: OutPoint,
        /// The reclaim transaction.
        txid: Txid,
    },
    /// Not yet: its timeout passes at this height.
    Waiting {
        /// The deposit.
        outpoint: OutPoint,
        /// First block height that may include the reclaim (`None` while unconfirmed).
        spendable_at: Option<u32>,
    },
    /// No longer unspent on the chain (a batch or someone spent it).
    Gone {
        /// The deposit.
        outpoint: OutPoint,
    },
}

/// The status of a stored deposit the chain no longer shows unspent. A deposit signed into
/// batches is `Batched` once one of its funding transactions confirmed, and keeps its list
/// while one waits in the mempool; a withdrawing one likewise becomes `Withdrawn`;
/// otherwise the chain says it is spent, by something this wallet has no record of.
pub async fn status_when_gone<C: ChainSource>(
    chain: &C,
    status: &DepositStatus,
) -> Result<DepositStatus, ChainSourceError> {
    match status {
        DepositStatus::InBatch { funding_txids } => {
            for &funding_txid in funding_txids {
                match chain.confirmations(funding_txid).await? {
                    Some(0) => return Ok(status.clone()),
                    Some(_) => return Ok(DepositStatus::Batched { funding_txid }),
                    None => {}
                }
            }
        }
        DepositStatus::Withdrawing { txids } => {
            // The newest first: a replacement is the one likely in the mempool.
            for &txid in txids.iter().rev() {
                match chain.confirmations(txid).await? {
                    Some(0) => return Ok(status.clone()),
                    Some(_) => return Ok(DepositStatus::Withdrawn { txid }),
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(DepositStatus::Spent)
}

/// Spends every unspent static deposit whose timeout has passed through its timeout path.
pub async fn reclaim_deposits<C: ChainSource>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &C,
) -> Result<Vec<ReclaimItem>, ExitToolError> {
    reclaim_with(store, wallet, chain, None::<&NoDevChain>).await
}

/// As [`reclaim_deposits`] on a dev chain, mining until the last of them is spendable
/// first.
pub async fn reclaim_deposits_dev<D: DevChain>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &D,
) -> Result<Vec<ReclaimItem>, ExitToolError> {
    reclaim_with(store, wallet, chain, Some(chain)).await
}

/// Mines `n` blocks on `dev`, if there is one (the new tip height).
async fn mine<D: DevChain>(dev: Option<&D>, n: u32) -> Result<Option<u32>, ChainSourceError> {
    match dev {
        Some(dev) if n > 0 => Ok(Some(dev.mine(n).await?)),
        _ => Ok(None),
    }
}

async fn reclaim_with<C: ChainSource, D: DevChain>(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &C,
    dev: Option<&D>,
) -> Result<Vec<ReclaimItem>, ExitToolError> {
    let key = wallet.deposit_key();
    let mut live = Vec::new();
    let mut items = Vec::new();
    for d in store.deposits()? {
        // A deposit signed into batches none of which confirmed can still be taken back.
        if !matches!(
            d.status,
            DepositStatus::Unspent
                | DepositStatus::Registered { .. }
                | DepositStatus::InBatch { .. }
                | DepositStatus::Withdrawing { .. }
        ) {
            continue;
        }
        let script = DepositScript::new(key.public, wallet.coordinator().key, d.deposit_csv)?;
        if script.script_pubkey() != d.txout.script_pubkey {
            return Err(ExitToolError::Mismatch(format!(
                "deposit {} does not pay this wallet's deposit script",
                d.outpoint
            )));
        }
        match chain.utxo(d.outpoint).await? {
            None => {
                let status = status_when_gone(chain, &d.status).await?;
                if status != d.status {
                    store.set_deposit_status(&d.outpoint, &status)?;
                }
                items.push(ReclaimItem::Gone { outpoint: d.outpoint });
            }
            Some(UtxoInfo { height: None, .. }) => {
                items.push(ReclaimItem::Waiting { outpoint: d.outpoint, spendable_at: None });
            }
            Some(UtxoInfo { height: Some(h), .. }) => {
                let ready = spendable_at(h, d.deposit_csv).ok_or(ExitToolError::Overflow)?;
                live.push((d, script, ready));
            }
        }
    }
    let mut tip = chain.tip_height().await?;
    if let Some(last) = live.iter().map(|(_, _, ready)| *ready).max() {
        if tip.saturating_add(1) < last {
            if let Some(height) = mine(dev, last - tip - 1).await? {
                tip = height;
            }
        }
    }
    let rate = chain.fee_rate().await?;
    let mut reclaimed = false;
    for (d, script, ready) in live {
        if tip.saturating_add(1) < ready {
            items.push(ReclaimItem::Waiting { outpoint: d.outpoint, spendable_at: Some(ready) });
            continue;
        }
        let tx = reclaim_tx(&script, &key, d.outpoint, &d.txout, wallet.fee_script(), rate)?;
        let txid = chain.broadcast(&tx).await?;
        store.set_deposit_status(&d.outpoint, &DepositStatus::Reclaimed { txid })?;
        history(store, StepName::Reclaimed, format!("deposit {} by {txid}", d.outpoint))?;
        items.push(ReclaimItem::Reclaimed { outpoint: d.outpoint, txid });
        reclaimed = true;
    }
    if reclaimed {
        mine(dev, 1).await?;
    }
    Ok(items)
}
