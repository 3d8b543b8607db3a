//! The one vocabulary of a participant's round: the [`StepName`]s that driver progress,
//! the `cohort` output and the stored history all use, the [`Progress`] steps with their
//! details, and how a session ended ([`Outcome`]).
//!
//! A step names what just happened; where the session then waits in a phase of the same
//! meaning, step and phase carry the same name (`TreeSigned`, `DepositsSigned`,
//! `Finalized`, `Confirmed`, `Refused`, `Failed`; see [`StepName::phase`]).

use bitcoin::Txid;
use serde::Serialize;

use crate::session::PhaseName;

/// The name of a step: its `snake_case` form is the `phase` tag of `--json` progress and
/// the `kind` of a history event; its words are how `cohort join` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// A round was announced.
    Announced,
    /// The coordinator accepted the registration.
    Registered,
    /// A proposal passed every check.
    ProposalChecked,
    /// Tree partial signatures were sent.
    TreeSigned,
    /// A proposal failed a check; nothing was signed.
    ProposalRejected,
    /// Every exit path of the batch is on disk.
    ExitPathsStored,
    /// Deposit partial signatures were sent.
    DepositsSigned,
    /// The attempt was aborted before anything was broadcast.
    Aborted,
    /// The funding transaction was broadcast.
    Finalized,
    /// The funding transaction confirmed.
    Confirmed,
    /// The registration was refused.
    Refused,
    /// The session failed.
    Failed,
    /// A node of an exit path was published (by `cohort exit`).
    ExitBroadcast,
    /// A leaf was taken out of its batch (by `cohort exit`).
    Exited,
    /// A deposit was taken back through its timeout path (by `cohort reclaim`).
    Reclaimed,
    /// The coordinator said something this wallet's own records contradict (recorded, shown,
    /// never acted on).
    Alarm,
}

impl StepName {
    /// The `snake_case` name (history `kind`, JSON tag).
    pub const fn as_str(self) -> &'static str {
        match self {
            StepName::Announced => "announced",
            StepName::Registered => "registered",
            StepName::ProposalChecked => "proposal_checked",
            StepName::TreeSigned => "tree_signed",
            StepName::ProposalRejected => "proposal_rejected",
            StepName::ExitPathsStored => "exit_paths_stored",
            StepName::DepositsSigned => "deposits_signed",
            StepName::Aborted => "aborted",
            StepName::Finalized => "finalized",
            StepName::Confirmed => "confirmed",
            StepName::Refused => "refused",
            StepName::Failed => "failed",
            StepName::ExitBroadcast => "exit_broadcast",
            StepName::Exited => "exited",
            StepName::Reclaimed => "reclaimed",
            StepName::Alarm => "alarm",
        }
    }

    /// The session phase of the same name, where the step leads to one.
    pub const fn phase(self) -> Option<PhaseName> {
        match self {
            StepName::TreeSigned => Some(PhaseName::TreeSigned),
            StepName::DepositsSigned => Some(PhaseName::DepositsSigned),
            StepName::Finalized => Some(PhaseName::Finalized),
            StepName::Confirmed => Some(PhaseName::Confirmed),
            StepName::Refused => Some(PhaseName::Refused),
            StepName::Failed => Some(PhaseName::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for StepName {
    /// The name in words (`tree signed`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, word) in self.as_str().split('_').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(word)?;
        }
        Ok(())
    }
}

/// A step of the round with its details. `--json` prints it as `{"phase": ..., ...}`
/// with the step's [`StepName`] as the tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Progress {
    /// A round was announced.
    Announced {
        /// Round number.
        round: u64,
    },
    /// The coordinator accepted the registration.
    Registered {
        /// Round number.
        round: u64,
        /// Its registration id.
        registration: u64,
        /// Deposits registered.
        deposits: usize,
    },
    /// The proposal passed every check.
    ProposalChecked {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// Tree partial signatures were sent.
    TreeSigned {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// A proposal failed a check; nothing was signed.
    ProposalRejected {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// The failed check.
        reason: String,
    },
    /// Every exit path is on disk.
    ExitPathsStored {
        /// The funding transaction the paths spend.
        funding_txid: Txid,
        /// How many paths.
        paths: usize,
    },
    /// Deposit signatures were sent.
    DepositsSigned {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// The attempt was aborted before anything was broadcast.
    Aborted {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether we were excluded.
        excluded: bool,
    },
    /// The funding transaction was broadcast.
    Finalized {
        /// Its txid.
        txid: Txid,
    },
    /// The funding transaction confirmed.
    Confirmed {
        /// Block height.
        height: u32,
    },
    /// The registration was refused.
    Refused {
        /// Why.
        reason: String,
    },
    /// The session failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// The coordinator's word contradicts what this wallet signed.
    Alarm {
        /// What was claimed against what is known.
        what: String,
    },
}

impl Progress {
    /// The step's name.
    pub fn step(&self) -> StepName {
        match self {
            Progress::Announced { .. } => StepName::Announced,
            Progress::Registered { .. } => StepName::Registered,
            Progress::ProposalChecked { .. } => StepName::ProposalChecked,
            Progress::TreeSigned { .. } => StepName::TreeSigned,
            Progress::ProposalRejected { .. } => StepName::ProposalRejected,
            Progress::ExitPathsStored { .. } => StepName::ExitPathsStored,
            Progress::DepositsSigned { .. } => StepName::DepositsSigned,
            Progress::Aborted { .. } => StepName::Aborted,
            Progress::Finalized { .. } => StepName::Finalized,
            Progress::Confirmed { .. } => StepName::Confirmed,
            Progress::Refused { .. } => StepName::Refused,
            Progress::Failed { .. } => StepName::Failed,
            Progress::Alarm { .. } => StepName::Alarm,
        }
    }

    /// The details, as the history's `detail` and after the name in `cohort join`.
    pub fn detail(&self) -> String {
        match self {
            Progress::Announced { round } => format!("round {round}"),
            Progress::Registered { round, registration, deposits } => {
                format!("round {round}, registration {registration}, {deposits} deposit(s)")
            }
            Progress::ProposalChecked { batch, attempt }
            | Progress::TreeSigned { batch, attempt }
            | Progress::DepositsSigned { batch, attempt } => {
                format!("batch {batch}, attempt {attempt}")
            }
            Progress::ProposalRejected { batch, attempt, reason } => {
                format!("batch {batch}, attempt {attempt}: {reason}")
            }
            Progress::ExitPathsStored { funding_txid, paths } => {
                format!("{paths} path(s) of funding tx {funding_txid}")
            }
            Progress::Aborted { batch, attempt, reason, excluded } => format!(
                "batch {batch}, attempt {attempt}: {reason}{}",
                if *excluded { " (we were excluded)" } else { "" }
            ),
            Progress::Finalized { txid } => format!("funding tx {txid}"),
            Progress::Confirmed { height } => format!("at height {height}"),
            Progress::Refused { reason } | Progress::Failed { reason } => reason.clone(),
            Progress::Alarm { what } => what.clone(),
        }
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.step(), self.detail())
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The funding transaction confirmed.
    Confirmed {
        /// Its txid (as checked locally before signing).
        funding_txid: Option<Txid>,
        /// Block height.
        height: u32,
    },
    /// The registration was refused.
    Refused {
        /// Why.
        reason: String,
    },
    /// The session failed (deposits were not signed unless `deposits_signed`).
    Failed {
        /// Why.
        reason: String,
        /// Whether deposit signatures went out before the failure.
        deposits_signed: bool,
    },
    /// The caller cancelled the round before any deposit signature ([`super::SignGate`]).
    Cancelled {
        /// The phase the session was in.
        phase: PhaseName,
    },
    /// The coordinator closed the session before the end.
    Disconnected {
        /// The phase the session was in.
        phase: PhaseName,
        /// Whether deposit signatures went out.
        deposits_signed: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_phases_share_their_names() {
        let all = [
            StepName::Announced,
            StepName::Registered,
            StepName::ProposalChecked,
            StepName::TreeSigned,
            StepName::ProposalRejected,
            StepName::ExitPathsStored,
            StepName::DepositsSigned,
            StepName::Aborted,
            StepName::Finalized,
            StepName::Confirmed,
            StepName::Refused,
            StepName::Failed,
            StepName::ExitBroadcast,
            StepName::Exited,
            StepName::Reclaimed,
            StepName::Alarm,
        ];
        for step in all {
            // The JSON tag, the history kind and the printed words are one name.
            let json = serde_json::to_value(step).unwrap_or_default();
            assert_eq!(json.as_str(), Some(step.as_str()));
            assert_eq!(step.to_string().replace(' ', "_"), step.as_str());
            if let Some(phase) = step.phase() {
                assert_eq!(format!("{phase:?}"), format!("{step:?}"));
            }
        }
        let p = Progress::TreeSigned { batch: 2, attempt: 1 };
        let json = serde_json::to_value(&p).unwrap_or_default();
        assert_eq!(json["phase"].as_str(), Some(p.step().as_str()));
        assert_eq!(p.to_string(), "tree signed (batch 2, attempt 1)");
    }
}
