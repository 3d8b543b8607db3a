//! Round parameters and the plain data types every module shares.

use bitcoin::{Amount, FeeRate, ScriptBuf};
use serde::{Deserialize, Serialize};

/// Default relative timeout of a static deposit address, in blocks (~100 days).
pub const DEFAULT_DEPOSIT_CSV: u16 = 14_400;
/// Largest `deposit_csv` a participant or coordinator accepts.
pub const MAX_DEPOSIT_CSV: u16 = 28_800;
/// Default relative timeout of a virtual-deposit leaf, in blocks (~1 day).
pub const DEFAULT_EXIT_CSV: u16 = 144;
/// Default number of blocks before a deposit's timeout below which it is refused.
pub const DEFAULT_SAFETY_MARGIN: u32 = 144;
/// Default tree radix.
pub const DEFAULT_RADIX: u8 = 4;
/// Smallest and largest radix.
pub const RADIX_RANGE: std::ops::RangeInclusive<u8> = 2..=16;
/// Default largest tree depth (transactions on the longest path). Every leaf registers
/// this many nonces, so it is kept near the depth a default batch reaches (5: about 417
/// inputs and their remainders, radix 4) rather than at what the protocol allows: depth 6
/// holds 4,096 leaves per batch, so batches split by leaf count only when users average
/// about ten leaves each. Against 8 it saves a participant a quarter of its registration
/// nonces (`valgrind --tool=callgrind cohort-sim --users 300 --seed 1 --max-depth 8`
/// against `--max-depth 6`: the participants' instructions 4.52 G against 4.06 G) and
/// bounds every exit at 6 transactions.
pub const DEFAULT_MAX_DEPTH: u8 = 6;
/// Default largest funding transaction weight: about 417 deposit inputs, a quarter of
/// the standardness limit (400,000). Chosen by measurement (`scripts/batch-sizes.sh`,
/// README): against the limit it costs 0.1 vB per user on chain (57.7 against 57.6)
/// and saves a tree level (exit depth 5 against 6), three quarters of the bytes each
/// participant receives (76 against 298 KiB) and of what a retry costs them, and a
/// third of the participant's CPU.
pub const DEFAULT_MAX_BATCH_WEIGHT: u64 = 100_000;
/// Default largest frame on the wire.
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;
/// Protocol version carried in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest tree depth anyone accepts (a participant's work and exit cost grow with it).
pub const MAX_DEPTH_LIMIT: u8 = 16;
/// Smallest `max_batch_weight`: room for the shared part and a few deposits.
pub const MIN_BATCH_WEIGHT: u64 = 2_000;
/// Lowest funding fee rate, in sat/kWU: Bitcoin Core's default minimum relay fee
/// (0.1 sat/vB).
pub const MIN_FEE_RATE_SAT_KWU: u64 = 25;
/// Largest number of leaves (the remainder included) or deposits per registration.
pub const MAX_PER_REGISTRATION: u16 = 1_024;
/// Largest `safety_margin` and `min_confs`, in blocks.
pub const MAX_BLOCKS_SETTING: u32 = 28_800;
/// Longest registration window or phase deadline, in milliseconds (one day).
pub const MAX_WINDOW_MS: u64 = 24 * 3_600 * 1_000;

/// Shape of the virtual transaction tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeParams {
    /// Largest number of outputs (children or leaves) of a node, besides the anchor.
    pub radix: u8,
    /// Largest number of transactions on a root-to-leaf path.
    pub max_depth: u8,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams { radix: DEFAULT_RADIX, max_depth: DEFAULT_MAX_DEPTH }
    }
}

/// What the coordinator charges and how it prices block space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// Mining fee rate of the funding transaction.
    #[serde(with = "fee_rate_sat_kwu")]
    pub fee_rate: FeeRate,
    /// Flat service fee per registration.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub service_base: Amount,
    /// Service fee in parts per million of the deposited value.
    pub service_ppm: u32,
}

impl Default for FeeSchedule {
    fn default() -> Self {
        FeeSchedule {
            fee_rate: FeeRate::from_sat_per_kwu(500),
            service_base: Amount::from_sat(500),
            service_ppm: 100,
        }
    }
}

/// One output a participant asks the tree to pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafOutput {
    /// Where the leaf pays.
    pub script_pubkey: ScriptBuf,
    /// How much it pays.
    #[serde(with = "bitcoin::amount::serde::as_sat")]
    pub amount: Amount,
}

mod fee_rate_sat_kwu {
    //! Serde for `FeeRate` as satoshis per 1,000 weight units.
    use bitcoin::FeeRate;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rate: &FeeRate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(rate.to_sat_per_kwu())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FeeRate, D::Error> {
        Ok(FeeRate::from_sat_per_kwu(u64::deserialize(d)?))
    }
}
