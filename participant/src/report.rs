//! What each `cohort` command and [`crate::client::Client`] method reports: serializable
//! for `--json`, displayable for people.

use std::fmt;

use bitcoin::OutPoint;
use serde::Serialize;

use crate::driver::{Outcome, Progress};
use crate::exit::{ExitReport, ReclaimItem};
use crate::store::{DepositRecord, DepositStatus, ExitPathRecord, HistoryEvent};
use crate::wallet::CoordinatorInfo;

/// `init`.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The data directory.
    pub data_dir: String,
    /// The remembered coordinator.
    pub coordinator: CoordinatorInfo,
    /// The static deposit address.
    pub address: String,
    /// Its descriptor.
    pub descriptor: String,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wallet created in {}", self.data_dir)?;
        writeln!(f, "coordinator: {}", self.coordinator.uri)?;
        writeln!(
            f,
            "network {}, deposit timeout {} blocks, exit timeout {} blocks{}",
            self.coordinator.network,
            self.coordinator.deposit_csv,
            self.coordinator.exit_csv,
            if self.coordinator.dev { ", dev chain" } else { "" }
        )?;
        writeln!(f, "deposit address: {}", self.address)?;
        write!(f, "descriptor: {}", self.descriptor)
    }
}

/// `address`.
#[derive(Debug, Clone, Serialize)]
pub struct AddressReport {
    /// The static deposit address.
    pub address: String,
    /// Its descriptor.
    pub descriptor: String,
    /// Its network.
    pub network: String,
    /// Its reclaim timeout.
    pub deposit_csv: u16,
    /// The fee key's address: it pays the CPFP children of an exit (fund it before
    /// exiting on a real chain) and receives exits and reclaims.
    pub fee_address: String,
}

impl fmt::Display for AddressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "address:    {}", self.address)?;
        writeln!(f, "descriptor: {}", self.descriptor)?;
        writeln!(f, "fee address (pays exits' CPFP children): {}", self.fee_address)?;
        write!(f, "network {}, reclaimable alone after {} blocks", self.network, self.deposit_csv)
    }
}

/// One deposit.
#[derive(Debug, Clone, Serialize)]
pub struct DepositRow {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its amount.
    pub amount_sat: u64,
    /// Confirmations, when the chain was asked.
    pub confirmations: Option<u32>,
    /// Its stored status.
    pub status: DepositStatus,
    /// Blocks until its timeout path opens, for a confirmed deposit still the wallet's
    /// (unspent, signed into batches none confirmed, or withdrawing): 0 means it can be
    /// reclaimed now.
    pub timeout_in: Option<u32>,
    /// Whether the timeout is less than [`EXPIRING_BLOCKS`] away: a coordinator with the
    /// default safety margin takes such a deposit into no round; withdraw it, or reclaim
    /// it once the timeout has passed.
    pub expiring: bool,
}

/// How close a deposit's timeout may come before it is shown as expiring: the default
/// safety margin within which a coordinator refuses it for a round.
pub const EXPIRING_BLOCKS: u32 = cohort_common::params::DEFAULT_SAFETY_MARGIN;

impl DepositRow {
    /// A row from a record, with its confirmations when the chain was asked.
    pub fn new(d: &DepositRecord, confirmations: Option<u32>) -> Self {
        let still_ours = matches!(
            d.status,
            DepositStatus::Unspent
                | DepositStatus::InBatch { .. }
                | DepositStatus::Withdrawing { .. }
        );
        let timeout_in = confirmations
            .filter(|c| still_ours && *c > 0)
            .map(|c| u32::from(d.deposit_csv).saturating_sub(c));
        DepositRow {
            outpoint: d.outpoint,
            amount_sat: d.txout.value.to_sat(),
            confirmations,
            status: d.status.clone(),
            timeout_in,
            expiring: timeout_in.is_some_and(|t| t < EXPIRING_BLOCKS),
        }
    }
}

fn status_text(s: &DepositStatus) -> String {
    match s {
        DepositStatus::Unspent => "unspent".into(),
        DepositStatus::Registered { round } => format!("registered in round {round}"),
        DepositStatus::InBatch { funding_txids } => match &funding_txids[..] {
            [one] => format!("in batch {one} (exit paths stored), not confirmed"),
            many => format!(
                "in {} batch attempts ({}; exit paths stored), none confirmed",
                many.len(),
                many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        },
        DepositStatus::Batched { funding_txid } => format!("batched in {funding_txid}"),
        DepositStatus::Spent => "spent".into(),
        DepositStatus::Reclaimed { txid } => format!("reclaimed by {txid}"),
        DepositStatus::Withdrawing { txids } => match &txids[..] {
            [one] => format!("withdrawing in {one}, not confirmed"),
            many => format!(
                "withdrawing in {} (replacing {}), not confirmed",
                many[many.len() - 1],
                many[..many.len() - 1]
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        DepositStatus::Withdrawn { txid } => format!("withdrawn by {txid}"),
    }
}

impl fmt::Display for DepositRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:>12} sat  {}", self.outpoint, self.amount_sat, status_text(&self.status))?;
        if let Some(c) = self.confirmations {
            write!(f, ", {c} confirmation(s)")?;
        }
        match self.timeout_in {
            Some(0) => write!(f, "; timed out: reclaim it (or withdraw it)")?,
            Some(t) if self.expiring => write!(
                f,
                "; expiring: times out in {t} blocks and joins no round now (withdraw it, or \
                 reclaim it after the timeout)"
            )?,
            _ => {}
        }
        Ok(())
    }
}

/// `deposits`.
#[derive(Debug, Clone, Serialize)]
pub struct DepositsReport {
    /// The chain tip.
    pub tip: u32,
    /// Every stored deposit.
    pub deposits: Vec<DepositRow>,
}

impl fmt::Display for DepositsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tip height {}; {} deposit(s)", self.tip, self.deposits.len())?;
        for d in &self.deposits {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// `join`.
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    /// The deposits registered.
    pub deposits: Vec<OutPoint>,
    /// Their total, in sat.
    pub deposited_sat: u64,
    /// The key index of the remainder leaf.
    pub leaf_key_index: u32,
    /// Every step seen.
    pub steps: Vec<Progress>,
    /// How it ended (as the coordinator told it).
    pub outcome: Outcome,
    /// The funding transaction's confirmations on the wallet's own chain source, asked
    /// once the coordinator said it confirmed (`None`: not seen there, or not asked).
    pub own_confirmations: Option<u32>,
}

impl JoinReport {
    /// Whether the batch confirmed on the wallet's own chain source (the coordinator's
    /// word alone is not enough).
    pub fn confirmed(&self) -> bool {
        matches!(self.outcome, Outcome::Confirmed { .. })
            && self.own_confirmations.is_some_and(|n| n >= 1)
    }
}

impl fmt::Display for JoinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Confirmed { funding_txid, height } => {
                if !self.confirmed() {
                    write!(f, "the coordinator says the batch confirmed at height {height}")?;
                    if let Some(txid) = funding_txid {
                        write!(f, " (funding tx {txid})")?;
                    }
                    return write!(
                        f,
                        ", but the wallet's own chain source does not show it confirmed \
                         ({}); `cohort deposits` checks again",
                        match self.own_confirmations {
                            Some(n) => format!("{n} confirmations"),
                            None => "unknown transaction".into(),
                        }
                    );
                }
                write!(f, "done: batch confirmed at height {height}")?;
                if let Some(txid) = funding_txid {
                    write!(f, " (funding tx {txid})")?;
                }
                if let Some(n) = self.own_confirmations {
                    write!(f, ", {n} confirmation(s) on the own chain source")?;
                }
                write!(f, "; see `cohort status` for the exit paths")
            }
            Outcome::Refused { reason } => write!(f, "not joined: registration refused: {reason}"),
            Outcome::Failed { reason, deposits_signed } => write!(
                f,
                "round failed: {reason}{}",
                if *deposits_signed {
                    " (deposits were signed: the exit paths are stored)"
                } else {
                    " (nothing was signed: the deposits are still yours)"
                }
            ),
            Outcome::Cancelled { phase } => write!(
                f,
                "cancelled in phase {phase:?} before any deposit signature: the deposits are \
                 still yours"
            ),
            Outcome::Disconnected { phase, deposits_signed } => write!(
                f,
                "the coordinator closed the session in phase {phase:?}{}",
                if *deposits_signed { " (the exit paths are stored)" } else { "" }
            ),
        }
    }
}

/// One exit path.
#[derive(Debug, Clone, Serialize)]
pub struct ExitPathRow {
    /// The number `exit` accepts.
    pub number: usize,
    /// `<funding_txid>:<leaf>`.
    pub id: String,
    /// The leaf's amount.
    pub amount_sat: u64,
    /// Transactions on the path.
    pub depth: usize,
    /// The leaf key index, if the leaf pays one of our keys.
    pub leaf_key_index: Option<u32>,
    /// The leaf's timeout.
    pub exit_csv: Option<u16>,
    /// Whether it was exited.
    pub exited: bool,
}

impl ExitPathRow {
    /// A row from a record.
    pub fn new(number: usize, p: &ExitPathRecord, exited: bool) -> Self {
        ExitPathRow {
            number,
            id: format!("{}:{}", p.funding_txid, p.leaf),
            amount_sat: p.leaf_output.value.to_sat(),
            depth: p.path.len(),
            leaf_key_index: p.leaf_key_index,
            exit_csv: p.exit_csv,
            exited,
        }
    }
}

/// `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The coordinator URI.
    pub coordinator: String,
    /// The static deposit address.
    pub address: String,
    /// Stored deposits.
    pub deposits: Vec<DepositRow>,
    /// Stored exit paths.
    pub exit_paths: Vec<ExitPathRow>,
    /// Recent history, newest first.
    pub history: Vec<HistoryEvent>,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "coordinator: {}", self.coordinator)?;
        writeln!(f, "address: {}", self.address)?;
        write!(f, "deposits ({}):", self.deposits.len())?;
        for d in &self.deposits {
            write!(f, "\n  {d}")?;
        }
        write!(f, "\nexit paths ({}):", self.exit_paths.len())?;
        for p in &self.exit_paths {
            write!(f, "\n  #{} {} {} sat, {} tx(s)", p.number, p.id, p.amount_sat, p.depth)?;
            if let (Some(index), Some(csv)) = (p.leaf_key_index, p.exit_csv) {
                write!(f, ", leaf key {index}, timeout {csv} blocks")?;
            }
            if p.exited {
                write!(f, ", exited")?;
            }
        }
        write!(f, "\nrecent history:")?;
        for h in &self.history {
            write!(f, "\n  {} {}: {}", utc_time(h.at_ms), h.kind, h.detail)?;
        }
        Ok(())
    }
}

pub use cohort_common::time::utc_time;

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leaf {}:{} ({} sat): ", self.funding_txid, self.leaf, self.amount_sat)?;
        write!(
            f,
            "{} node tx(s) published, {} already confirmed",
            self.published.len(),
            self.already_confirmed
        )?;
        if !self.published.is_empty() || !self.replaced.is_empty() {
            write!(f, "\nCPFP children pay {} sat/vB for their node", self.fee_rate_sat_vb)?;
        }
        if let Some(estimate) = self.capped_from_sat_vb {
            write!(
                f,
                " (the chain estimates {estimate} sat/vB, above the cap: raise --max-fee-rate \
                 if it does not confirm)"
            )?;
        }
        for txid in &self.replaced {
            write!(f, "\nnode {txid} had not confirmed: its child was replaced at a higher rate")?;
        }
        if let Some(txid) = self.published_by_others {
            write!(
                f,
                "\nnode {txid} waits in the mempool with a child another user of the batch \
                 published"
            )?;
        }
        if let Some(o) = self.leaf_outpoint {
            write!(f, "\nleaf output on chain at {o}")?;
        }
        if let Some(txid) = self.reclaim_txid {
            write!(f, "\nreclaimed to the wallet by {txid}")?;
        }
        if let Some(h) = self.waiting_for_height {
            write!(f, "\nnot finished: run `cohort exit` again from height {h}")?;
        }
        if self.exited {
            write!(f, "\nexited")?;
        }
        Ok(())
    }
}

/// `exit --all`: every leaf not exited yet, each as far as the chain allows.
#[derive(Debug, Clone, Serialize)]
pub struct ExitAllReport {
    /// One item per stored exit path not exited before.
    pub leaves: Vec<ExitAllItem>,
}

/// One leaf of `exit --all`.
#[derive(Debug, Clone, Serialize)]
pub struct ExitAllItem {
    /// The batch.
    pub funding_txid: bitcoin::Txid,
    /// The leaf.
    pub leaf: u32,
    /// What the exit did, when it could start.
    pub report: Option<ExitReport>,
    /// Why it could not (a batch attempt whose funding transaction never reached the
    /// chain, say).
    pub error: Option<String>,
}

impl fmt::Display for ExitAllReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.leaves.is_empty() {
            return write!(f, "no leaf left to exit");
        }
        let mut first = true;
        for item in &self.leaves {
            if !first {
                writeln!(f)?;
            }
            first = false;
            match (&item.report, &item.error) {
                (Some(report), _) => write!(f, "{report}")?,
                (None, Some(e)) => write!(f, "leaf {}:{}: {e}", item.funding_txid, item.leaf)?,
                (None, None) => write!(f, "leaf {}:{}", item.funding_txid, item.leaf)?,
            }
        }
        Ok(())
    }
}

/// `withdraw`: a cooperative withdrawal, signed and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WithdrawReport {
    /// The withdrawal.
    pub txid: bitcoin::Txid,
    /// The withdrawal it replaces, for a fee bump.
    pub replaces: Option<bitcoin::Txid>,
    /// The deposits it spends.
    pub deposits: Vec<OutPoint>,
    /// Where it pays (an address, or the script in hex when it has none).
    pub destination: String,
    /// What the destination receives.
    pub amount_sat: u64,
    /// The mining fee.
    pub fee_sat: u64,
    /// Its virtual size.
    pub vsize: u64,
    /// Its fee rate, sat/vB rounded up.
    pub fee_rate_sat_vb: u64,
}

impl fmt::Display for WithdrawReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "withdrawal {} published: {} sat to {} from {} deposit(s), fee {} sat ({} sat/vB, {} vB)",
            self.txid,
            self.amount_sat,
            self.destination,
            self.deposits.len(),
            self.fee_sat,
            self.fee_rate_sat_vb,
            self.vsize
        )?;
        if let Some(old) = self.replaces {
            write!(f, "\nreplaces {old}")?;
        }
        Ok(())
    }
}

/// `send`: the wallet's own coins paid to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendReport {
    /// The transaction.
    pub txid: bitcoin::Txid,
    /// Where it pays.
    pub destination: String,
    /// What the destination receives.
    pub amount_sat: u64,
    /// The mining fee.
    pub fee_sat: u64,
    /// What came back to the wallet.
    pub change_sat: u64,
    /// How many coins it spent.
    pub inputs: usize,
}

impl fmt::Display for SendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} sat to {} in {} ({} coin(s), fee {} sat, change {} sat)",
            self.amount_sat,
            self.destination,
            self.txid,
            self.inputs,
            self.fee_sat,
            self.change_sat
        )
    }
}

/// `reclaim`.
#[derive(Debug, Clone, Serialize)]
pub struct ReclaimReport {
    /// One item per deposit looked at.
    pub deposits: Vec<ReclaimItem>,
}

impl fmt::Display for ReclaimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.deposits.is_empty() {
            return write!(f, "no unspent deposit to reclaim");
        }
        let mut first = true;
        for item in &self.deposits {
            if !first {
                writeln!(f)?;
            }
            first = false;
            match item {
                ReclaimItem::Reclaimed { outpoint, txid } => {
                    write!(f, "{outpoint}: reclaimed by {txid}")?
                }
                ReclaimItem::Waiting { outpoint, spendable_at: Some(h) } => {
                    write!(f, "{outpoint}: spendable from height {h}")?
                }
                ReclaimItem::Waiting { outpoint, spendable_at: None } => {
                    write!(f, "{outpoint}: not confirmed yet")?
                }
                ReclaimItem::Gone { outpoint } => write!(f, "{outpoint}: already spent")?,
            }
        }
        Ok(())
    }
}

/// `dev fund`.
#[derive(Debug, Clone, Serialize)]
pub struct FundReport {
    /// The new deposit.
    pub outpoint: OutPoint,
    /// Its amount.
    pub amount_sat: u64,
    /// The address funded.
    pub address: String,
}

impl fmt::Display for FundReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "funded {} with {} sat: deposit {}", self.address, self.amount_sat, self.outpoint)
    }
}

/// `dev mine`.
#[derive(Debug, Clone, Serialize)]
pub struct MineReport {
    /// Blocks mined.
    pub mined: u32,
    /// The new tip height.
    pub height: u32,
}

impl fmt::Display for MineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mined {} block(s); tip height {}", self.mined, self.height)
    }
}
