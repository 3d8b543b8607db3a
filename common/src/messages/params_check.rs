//! The one check of round parameters: the coordinator's config, its engine and every
//! participant's announce check call [`RoundParams::validate`], and both sides count a
//! registration's leaves and deposits with [`RoundParams::check_registration_shape`].

use bitcoin::FeeRate;

use super::RoundParams;
use crate::params::{
    TreeParams, MAX_BLOCKS_SETTING, MAX_DEPOSIT_CSV, MAX_DEPTH_LIMIT, MAX_PER_REGISTRATION,
    MAX_WINDOW_MS, MIN_BATCH_WEIGHT, MIN_FEE_RATE_SAT_KWU, RADIX_RANGE,
};
use crate::standard::MAX_STANDARD_WEIGHT;

/// A round parameter outside its allowed range. The message names the setting as the
/// coordinator's config file spells it, and the allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A setting is outside its range.
    #[error("{name} = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The setting, as the config file names it.
        name: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
}

/// A registration's shape outside what its round takes: the one count both sides make
/// ([`RoundParams::check_registration_shape`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// More leaves in one registration (the remainder included) than the round takes.
    #[error("{count} leaves (the remainder included) exceed the round's maximum of {max}")]
    TooManyLeaves {
        /// Leaves, the remainder included.
        count: usize,
        /// The round's `max_leaves_per_registration`.
        max: u16,
    },
    /// More deposits in one registration than the round takes.
    #[error("{count} deposits exceed the round's maximum of {max}")]
    TooManyDeposits {
        /// Deposits offered.
        count: usize,
        /// The round's `max_deposits_per_registration`.
        max: u16,
    },
    /// A registration with no deposit.
    #[error("no deposit to register")]
    NoDeposits,
}

impl From<ShapeError> for super::RefusalReason {
    fn from(e: ShapeError) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match e {
            ShapeError::TooManyLeaves { count: n, max } => {
                Self::TooManyLeaves { count: count(n), max: max.into() }
            }
            ShapeError::TooManyDeposits { count: n, max } => {
                Self::TooManyDeposits { count: count(n), max: max.into() }
            }
            ShapeError::NoDeposits => Self::NoDeposits,
        }
    }
}

fn in_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<(), ParamsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ParamsError::OutOfRange { name, value, min, max })
    }
}

impl TreeParams {
    /// Radix in 2..=16, `max_depth` in 1..=[`MAX_DEPTH_LIMIT`].
    pub fn validate(&self) -> Result<(), ParamsError> {
        let radix = RADIX_RANGE;
        in_range("radix", self.radix.into(), (*radix.start()).into(), (*radix.end()).into())?;
        in_range("max_depth", self.max_depth.into(), 1, MAX_DEPTH_LIMIT.into())
    }
}

impl RoundParams {
    /// Every parameter within the range this protocol accepts. The round number and the
    /// coordinator key are the caller's to check (they depend on what it expects).
    pub fn validate(&self) -> Result<(), ParamsError> {
        let blocks = u64::from(MAX_BLOCKS_SETTING);
        let csv = u64::from(MAX_DEPOSIT_CSV);
        let per_registration = u64::from(MAX_PER_REGISTRATION);
        self.tree.validate()?;
        in_range("exit_csv", self.exit_csv.into(), 1, csv)?;
        in_range("max_deposit_csv", self.max_deposit_csv.into(), 1, csv)?;
        in_range("min_confs", self.min_confs.into(), 1, blocks)?;
        in_range("safety_margin", self.safety_margin.into(), 0, blocks)?;
        in_range(
            "max_leaves_per_registration",
            self.max_leaves_per_registration.into(),
            1,
            per_registration,
        )?;
        in_range(
            "max_deposits_per_registration",
            self.max_deposits_per_registration.into(),
            1,
            per_registration,
        )?;
        let max_weight = MAX_STANDARD_WEIGHT.to_wu();
        in_range("max_batch_weight", self.max_batch_weight, MIN_BATCH_WEIGHT, max_weight)?;
        in_range("registration_window_ms", self.registration_closes_ms, 1, MAX_WINDOW_MS)?;
        in_range("phase_timeout_ms", self.phase_timeout_ms, 1, MAX_WINDOW_MS)?;
        in_range("max_attempts", self.max_attempts.into(), 1, 100)?;
        in_range(
            "fee_rate_sat_per_kwu",
            self.fees.fee_rate.to_sat_per_kwu(),
            MIN_FEE_RATE_SAT_KWU,
            FeeRate::from_sat_per_vb_u32(10_000).to_sat_per_kwu(),
        )?;
        in_range("service_ppm", self.fees.service_ppm.into(), 0, 1_000_000)
    }

    /// A registration of `deposits` deposits and `fixed_leaves` leaves besides its
    /// remainder fits the round. `max_leaves_per_registration` counts the remainder.
    pub fn check_registration_shape(
        &self,
        deposits: usize,
        fixed_leaves: usize,
    ) -> Result<(), ShapeError> {
        if deposits == 0 {
            return Err(ShapeError::NoDeposits);
        }
        let max = self.max_deposits_per_registration;
        if deposits > usize::from(max) {
            return Err(ShapeError::TooManyDeposits { count: deposits, max });
        }
        let max = self.max_leaves_per_registration;
        let count = fixed_leaves.saturating_add(1);
        if count > usize::from(max) {
            return Err(ShapeError::TooManyLeaves { count, max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::FeeSchedule;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    fn params() -> RoundParams {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[7; 32]).unwrap().public_key(&secp);
        RoundParams {
            round: 1,
            tree: TreeParams::default(),
            fees: FeeSchedule::default(),
            coordinator_key: key,
            exit_csv: 144,
            max_deposit_csv: MAX_DEPOSIT_CSV,
            min_confs: 1,
            safety_margin: 144,
            max_leaves_per_registration: 16,
            max_deposits_per_registration: 16,
            max_batch_weight: MAX_STANDARD_WEIGHT.to_wu(),
            registration_closes_ms: 10_000,
            phase_timeout_ms: 30_000,
            max_attempts: 3,
        }
    }

    #[test]
    fn defaults_pass() {
        params().validate().unwrap();
    }

    /// Every setting, pushed just outside its range, is refused by name.
    #[test]
    fn each_setting_is_refused_by_name() {
        type Edit = fn(&mut RoundParams);
        let cases: [(&str, Edit); 17] = [
            ("radix", |p| p.tree.radix = 1),
            ("radix", |p| p.tree.radix = 17),
            ("max_depth", |p| p.tree.max_depth = 0),
            ("max_depth", |p| p.tree.max_depth = MAX_DEPTH_LIMIT + 1),
            ("exit_csv", |p| p.exit_csv = 0),
            ("max_deposit_csv", |p| p.max_deposit_csv = MAX_DEPOSIT_CSV + 1),
            ("min_confs", |p| p.min_confs = 0),
            ("safety_margin", |p| p.safety_margin = MAX_BLOCKS_SETTING + 1),
            ("max_leaves_per_registration", |p| p.max_leaves_per_registration = 0),
            ("max_deposits_per_registration", |p| p.max_deposits_per_registration = 0),
            ("max_batch_weight", |p| p.max_batch_weight = 0),
            ("max_batch_weight", |p| p.max_batch_weight = MAX_STANDARD_WEIGHT.to_wu() + 1),
            ("registration_window_ms", |p| p.registration_closes_ms = 0),
            ("phase_timeout_ms", |p| p.phase_timeout_ms = 0),
            ("max_attempts", |p| p.max_attempts = 0),
            ("fee_rate_sat_per_kwu", |p| p.fees.fee_rate = FeeRate::ZERO),
            ("service_ppm", |p| p.fees.service_ppm = 1_000_001),
        ];
        for (name, edit) in cases {
            let mut p = params();
            edit(&mut p);
            match p.validate() {
                Err(ParamsError::OutOfRange { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_remainder_counts_as_a_leaf() {
        let mut p = params();
        p.max_leaves_per_registration = 2;
        p.check_registration_shape(1, 1).unwrap();
        assert_eq!(
            p.check_registration_shape(1, 2),
            Err(ShapeError::TooManyLeaves { count: 3, max: 2 })
        );
        assert_eq!(p.check_registration_shape(0, 0), Err(ShapeError::NoDeposits));
        assert_eq!(
            p.check_registration_shape(17, 0),
            Err(ShapeError::TooManyDeposits { count: 17, max: 16 })
        );
    }

    #[test]
    fn errors_name_the_key_and_range() {
        let mut p = params();
        p.tree.radix = 20;
        assert_eq!(p.validate().unwrap_err().to_string(), "radix = 20 is outside 2..=16");
    }
}
