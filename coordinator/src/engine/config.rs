//! What an operator sets for the rounds a coordinator runs.

use std::time::Duration;

use bitcoin::ScriptBuf;
use cohort_common::params::{
    FeeSchedule, TreeParams, DEFAULT_EXIT_CSV, DEFAULT_MAX_BATCH_WEIGHT, DEFAULT_SAFETY_MARGIN,
    MAX_DEPOSIT_CSV,
};

/// Round parameters and limits of a coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Tree shape.
    pub tree: TreeParams,
    /// Fees.
    pub fees: FeeSchedule,
    /// Relative timeout of the virtual-deposit leaves participants may ask for.
    pub exit_csv: u16,
    /// Largest `deposit_csv` accepted.
    pub max_deposit_csv: u16,
    /// Confirmations a deposit needs.
    pub min_confs: u32,
    /// Blocks before a deposit's timeout below which it is refused.
    pub safety_margin: u32,
    /// Largest number of leaves (fixed + remainder) per registration.
    pub max_leaves_per_registration: u16,
    /// Largest number of deposits per registration.
    pub max_deposits_per_registration: u16,
    /// Largest funding transaction weight.
    pub max_batch_weight: u64,
    /// How long registration stays open.
    pub registration_window: Duration,
    /// Registrations that close the round early.
    pub max_registrations: usize,
    /// Deadline of each signing phase.
    pub phase_timeout: Duration,
    /// Attempts per batch before it gives up.
    pub max_attempts: u8,
    /// How long a culprit's deposits stay banned.
    pub ban_duration: Duration,
    /// Where service fees are paid.
    pub payout_script: ScriptBuf,
}

impl CoordinatorConfig {
    /// Defaults for everything but the payout script.
    pub fn new(payout_script: ScriptBuf) -> Self {
        CoordinatorConfig {
            tree: TreeParams::default(),
            fees: FeeSchedule::default(),
            exit_csv: DEFAULT_EXIT_CSV,
            max_deposit_csv: MAX_DEPOSIT_CSV,
            min_confs: 1,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            max_leaves_per_registration: 16,
            max_deposits_per_registration: 16,
            max_batch_weight: DEFAULT_MAX_BATCH_WEIGHT,
            registration_window: Duration::from_secs(10),
            max_registrations: 100_000,
            phase_timeout: Duration::from_secs(30),
            max_attempts: 3,
            ban_duration: Duration::from_secs(24 * 3600),
            payout_script,
        }
    }
}
