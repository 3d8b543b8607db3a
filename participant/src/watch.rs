//! `cohort watch`: what needs the user's attention in the wallet's deposits and batches,
//! read from its store and its own chain source (never the coordinator), each item with
//! what to do about it.

use std::fmt;

use bitcoin::{OutPoint, Txid};
use serde::Serialize;

use crate::chain::ChainSource;
use crate::client::{Client, ClientError};
use crate::driver::StepName;
use crate::report::EXPIRING_BLOCKS;
use crate::store::{DepositStatus, MAX_HISTORY_READ};

/// One thing that needs the user's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Advice {
    /// A deposit still the wallet's whose timeout is less than [`EXPIRING_BLOCKS`] away:
    /// coordinators with the default safety margin no longer take it into a round.
    DepositExpiring {
        /// The deposit.
        outpoint: OutPoint,
        /// Blocks until its timeout path opens.
        blocks_left: u32,
    },
    /// A deposit whose timeout has passed: only the wallet can spend it now.
    DepositReclaimable {
        /// The deposit.
        outpoint: OutPoint,
    },
    /// A deposit signed into batch attempts of which none has confirmed.
    BatchUnconfirmed {
        /// The deposit.
        outpoint: OutPoint,
        /// Every funding transaction it was signed into.
        funding_txids: Vec<Txid>,
        /// Blocks until its timeout path opens, when known.
        timeout_in: Option<u32>,
    },
    /// A deposit in a co-signed withdrawal that has not confirmed.
    WithdrawalUnconfirmed {
        /// The deposit.
        outpoint: OutPoint,
        /// The newest withdrawal.
        txid: Txid,
    },
    /// The coordinator contradicted what this wallet signed, e.g. it named a funding
    /// transaction this wallet did not sign (recorded when it happened).
    CoordinatorAlarm {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
        /// What was recorded.
        what: String,
    },
    /// A tree node on one of the wallet's exit paths is on the chain (or in the mempool)
    /// and this wallet did not publish it: another user of the batch is exiting.
    NodePublishedByOthers {
        /// `<funding_txid>:<leaf>`, as `cohort exit` takes it.
        leaf: String,
        /// The node.
        node: Txid,
        /// Whether it is confirmed (otherwise it waits in the mempool).
        confirmed: bool,
    },
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Advice::DepositExpiring { outpoint, blocks_left } => write!(
                f,
                "deposit {outpoint} reaches its timeout in {blocks_left} blocks and no round \
                 takes it any more: withdraw it now (`cohort withdraw ADDRESS --deposit \
                 {outpoint}`), or reclaim it once the timeout has passed (`cohort reclaim`)"
            ),
            Advice::DepositReclaimable { outpoint } => write!(
                f,
                "deposit {outpoint} is past its timeout: spend it back to the wallet with \
                 `cohort reclaim` (or withdraw it with `cohort withdraw`)"
            ),
            Advice::BatchUnconfirmed { outpoint, funding_txids, timeout_in } => {
                let txids: Vec<String> = funding_txids.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "deposit {outpoint} is signed into {} not confirmed yet; its exit paths \
                     are stored for each",
                    txids.join(", ")
                )?;
                match timeout_in {
                    Some(0) => write!(f, "; if none confirms, `cohort reclaim` spends it now"),
                    Some(n) => write!(f, "; if none confirms, `cohort reclaim` in {n} blocks"),
                    None => Ok(()),
                }
            }
            Advice::WithdrawalUnconfirmed { outpoint, txid } => write!(
                f,
                "deposit {outpoint} is being withdrawn by {txid}, not confirmed yet: \
                 `cohort withdraw --bump {txid}` pays more"
            ),
            Advice::CoordinatorAlarm { at_ms, what } => write!(
                f,
                "ALARM at {}: {what}. The coordinator contradicted what this wallet signed; \
                 keep the stored exit paths and check the funding transactions named above",
                cohort_common::time::utc_time(*at_ms)
            ),
            Advice::NodePublishedByOthers { leaf, node, confirmed } => {
                let state = if *confirmed { "confirmed" } else { "in the mempool" };
                write!(
                    f,
                    "node {node} on the exit path of leaf {leaf} is {state}, published by \
                     someone else: nothing on the path expires; `cohort exit {leaf}` \
                     finishes the exit from there if you want the leaf on chain"
                )
            }
        }
    }
}

/// What `cohort watch` found at one look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchReport {
    /// The chain's tip height.
    pub tip: u32,
    /// Everything that needs attention, deposits first.
    pub advice: Vec<Advice>,
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.advice.is_empty() {
            return write!(f, "height {}: nothing needs attention", self.tip);
        }
        write!(f, "height {}:", self.tip)?;
        for a in &self.advice {
            write!(f, "\n- {a}")?;
        }
        Ok(())
    }
}

impl<C: ChainSource> Client<C> {
    /// One look at the wallet's deposits, alarms and exit paths, through its own chain
    /// source: what needs attention and what to do about it.
    pub async fn watch(&self) -> Result<WatchReport, ClientError> {
        let deposits = self.deposits().await?;
        let mut advice = Vec::new();
        for row in &deposits.deposits {
            let outpoint = row.outpoint;
            match (&row.status, row.timeout_in) {
                (DepositStatus::InBatch { funding_txids }, timeout_in) => {
                    advice.push(Advice::BatchUnconfirmed {
                        outpoint,
                        funding_txids: funding_txids.clone(),
                        timeout_in,
                    });
                }
                (DepositStatus::Withdrawing { txids }, _) => {
                    if let Some(txid) = txids.last() {
                        advice.push(Advice::WithdrawalUnconfirmed { outpoint, txid: *txid });
                    }
                }
                (DepositStatus::Unspent, Some(0)) => {
                    advice.push(Advice::DepositReclaimable { outpoint });
                }
                (DepositStatus::Unspent, Some(blocks_left)) if blocks_left < EXPIRING_BLOCKS => {
                    advice.push(Advice::DepositExpiring { outpoint, blocks_left });
                }
                _ => {}
            }
        }
        let store = self.store().as_ref();
        let alarm = StepName::Alarm.as_str();
        for event in store.history(MAX_HISTORY_READ)?.into_iter().rev() {
            if event.kind == alarm {
                advice.push(Advice::CoordinatorAlarm { at_ms: event.at_ms, what: event.detail });
            }
        }
        let chain = self.chain();
        for path in store.pending_exit_paths()? {
            if !matches!(chain.confirmations(path.funding_txid).await?, Some(n) if n >= 1) {
                continue;
            }
            // From the root down, as far as the path is on the chain; once this wallet
            // has published a node of the path itself, its exit is under way.
            let mut first_by_others = None;
            for node in &path.path {
                let txid = node.compute_txid();
                let Some(confirmations) = chain.confirmations(txid).await? else { break };
                if store.exit_child(&txid)?.is_some() {
                    first_by_others = None;
                    break;
                }
                first_by_others = first_by_others.or(Some((txid, confirmations >= 1)));
            }
            if let Some((node, confirmed)) = first_by_others {
                let leaf = format!("{}:{}", path.funding_txid, path.leaf);
                advice.push(Advice::NodePublishedByOthers { leaf, node, confirmed });
            }
        }
        Ok(WatchReport { tip: deposits.tip, advice })
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;

    #[test]
    fn each_item_says_what_to_do() {
        let outpoint = OutPoint { txid: Txid::from_byte_array([1; 32]), vout: 2 };
        let txid = Txid::from_byte_array([7; 32]);
        let cases = [
            (Advice::DepositExpiring { outpoint, blocks_left: 12 }, "in 12 blocks"),
            (Advice::DepositReclaimable { outpoint }, "cohort reclaim"),
            (
                Advice::BatchUnconfirmed {
                    outpoint,
                    funding_txids: vec![txid],
                    timeout_in: Some(30),
                },
                "`cohort reclaim` in 30 blocks",
            ),
            (Advice::WithdrawalUnconfirmed { outpoint, txid }, "cohort withdraw --bump"),
            (
                Advice::CoordinatorAlarm { at_ms: 0, what: "finalized an unknown txid".into() },
                "ALARM at 1970-01-01",
            ),
            (
                Advice::NodePublishedByOthers {
                    leaf: format!("{txid}:3"),
                    node: txid,
                    confirmed: false,
                },
                "in the mempool, published by someone else",
            ),
        ];
        for (advice, says) in cases {
            assert!(advice.to_string().contains(says), "{advice}");
            let json = serde_json::to_value(&advice).unwrap();
            assert!(json["kind"].is_string(), "{json}");
        }
        let quiet = WatchReport { tip: 5, advice: vec![] };
        assert_eq!(quiet.to_string(), "height 5: nothing needs attention");
    }
}
