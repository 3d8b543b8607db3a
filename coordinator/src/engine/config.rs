//! What an operator sets for the rounds a coordinator runs, checked by the protocol's one
//! parameter check ([`RoundParams::validate`]) before an engine takes it.

use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::ScriptBuf;
use cohort_common::messages::{ParamsError, RoundParams};
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
    /// How long a culprit's deposits stay banned after a first offence; each further
    /// offence of the same deposit doubles it, up to `max_ban_duration`.
    pub ban_duration: Duration,
    /// The longest ban a repeat offender gets.
    pub max_ban_duration: Duration,
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
            // About a few rounds, then 20 min, 40 min, ... up to 30 days.
            ban_duration: Duration::from_secs(600),
            max_ban_duration: Duration::from_secs(30 * 24 * 3600),
            payout_script,
        }
    }

    /// The engine's settings that a round announces, from announced parameters (the
    /// inverse of [`CoordinatorConfig::round_params`]); the rest keep their defaults.
    pub fn from_round_params(params: &RoundParams, payout_script: ScriptBuf) -> Self {
        CoordinatorConfig {
            tree: params.tree,
            fees: params.fees,
            exit_csv: params.exit_csv,
            max_deposit_csv: params.max_deposit_csv,
            min_confs: params.min_confs,
            safety_margin: params.safety_margin,
            max_leaves_per_registration: params.max_leaves_per_registration,
            max_deposits_per_registration: params.max_deposits_per_registration,
            max_batch_weight: params.max_batch_weight,
            registration_window: Duration::from_millis(params.registration_closes_ms),
            phase_timeout: Duration::from_millis(params.phase_timeout_ms),
            max_attempts: params.max_attempts,
            ..CoordinatorConfig::new(payout_script)
        }
    }

    /// What round `round` of a coordinator with key `coordinator_key` announces.
    pub fn round_params(&self, round: u64, coordinator_key: PublicKey) -> RoundParams {
        RoundParams {
            round,
            tree: self.tree,
            fees: self.fees,
            coordinator_key,
            exit_csv: self.exit_csv,
            max_deposit_csv: self.max_deposit_csv,
            min_confs: self.min_confs,
            safety_margin: self.safety_margin,
            max_leaves_per_registration: self.max_leaves_per_registration,
            max_deposits_per_registration: self.max_deposits_per_registration,
            max_batch_weight: self.max_batch_weight,
            registration_closes_ms: millis(self.registration_window),
            phase_timeout_ms: millis(self.phase_timeout),
            max_attempts: self.max_attempts,
        }
    }

    /// Every setting within its range: what the rounds announce passes
    /// [`RoundParams::validate`] (the check every participant makes), and a round takes
    /// at least one registration. The error names the setting as the config file does.
    pub fn validate(&self, coordinator_key: PublicKey) -> Result<(), ParamsError> {
        self.round_params(0, coordinator_key).validate()?;
        if self.max_registrations == 0 {
            return Err(ParamsError::OutOfRange {
                name: "max_registrations",
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
        Ok(())
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Coordinator;
    use cohort_common::exit::p2tr_single;
    use cohort_common::keys::Keypair;

    #[test]
    fn the_defaults_pass_and_a_setting_out_of_range_is_named() {
        let key = Keypair::random();
        let config = CoordinatorConfig::new(p2tr_single(&key));
        assert_eq!(config.validate(key.public), Ok(()));
        // What a round announces maps back to the same settings.
        let params = config.round_params(7, key.public);
        assert_eq!(params.validate(), Ok(()));
        assert_eq!(CoordinatorConfig::from_round_params(&params, p2tr_single(&key)), config);

        let mut bad = config.clone();
        bad.tree.radix = 17;
        let range = |name, value, min, max| ParamsError::OutOfRange { name, value, min, max };
        assert_eq!(bad.validate(key.public), Err(range("radix", 17, 2, 16)));
        // The engine takes no configuration that fails the check.
        assert!(Coordinator::new(key.clone(), bad).is_err());

        let mut bad = config.clone();
        bad.max_registrations = 0;
        assert_eq!(bad.validate(key.public), Err(range("max_registrations", 0, 1, u64::MAX)));
        let mut bad = config;
        bad.phase_timeout = Duration::ZERO;
        let max = cohort_common::params::MAX_WINDOW_MS;
        assert_eq!(bad.validate(key.public), Err(range("phase_timeout_ms", 0, 1, max)));
    }
}
