//! Funding-transaction weight and who pays what (DESIGN 5).
//!
//! Every participant pays the mining fee of its own inputs, an equal share of the
//! shared part (transaction overhead, the batch output and the coordinator output),
//! and the announced service fee (base + ppm of its deposited value). Each share is
//! rounded up, so the integer remainders land in the coordinator's output and the
//! funding transaction's fee is exactly `ceil(rate × weight)`.

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::params::FeeSchedule;

/// Weight of a Taproot key-path input: 41 bytes ×4 plus a 66-byte witness.
pub const KEY_PATH_INPUT_WEIGHT: u64 = 230;
/// Version, locktime (8 bytes ×4) and the segwit marker and flag (2).
const TX_FIXED_WEIGHT: u64 = 34;

/// Errors of fee computation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    /// A registration has no deposit.
    #[error("registration {0} has no deposit")]
    NoDeposits(usize),
    /// The deposits do not cover the requested leaves and the fee with a non-dust remainder.
    #[error("registration {index}: deposits {deposited} cannot pay leaves {requested}, fee {fee} and a remainder of at least {dust}")]
    InsufficientFunds {
        /// The registration.
        index: usize,
        /// What its deposits hold.
        deposited: Amount,
        /// What its fixed leaves ask for.
        requested: Amount,
        /// Its fee.
        fee: Amount,
        /// The dust limit of its remainder script.
        dust: Amount,
    },
    /// The fee is above what the participant accepts.
    #[error("registration {index}: fee {fee} is above its max_fee {max_fee}")]
    FeeTooHigh {
        /// The registration.
        index: usize,
        /// Its fee.
        fee: Amount,
        /// What it accepts.
        max_fee: Amount,
    },
    /// Amounts overflow.
    #[error("amount overflow")]
    Overflow,
    /// Nothing to fund.
    #[error("a batch needs at least one registration")]
    Empty,
}

/// Length of a compact-size integer.
fn varint_len(n: u64) -> u64 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Weight of one output with `script_len` bytes of scriptPubKey.
pub fn output_weight(script_len: usize) -> u64 {
    let len = script_len as u64;
    (8 + varint_len(len) + len) * 4
}

/// Exact weight of a funding transaction with `inputs` key-path inputs and these outputs.
pub fn funding_weight(inputs: usize, output_script_lens: &[usize]) -> u64 {
    shared_weight(inputs, output_script_lens) + inputs as u64 * KEY_PATH_INPUT_WEIGHT
}

/// The most key-path inputs a funding transaction with these outputs can have and
/// stay at or under `max_weight`.
pub fn max_inputs(max_weight: u64, output_script_lens: &[usize]) -> usize {
    let mut n = (max_weight / KEY_PATH_INPUT_WEIGHT) as usize;
    while n > 0 && funding_weight(n, output_script_lens) > max_weight {
        n -= 1;
    }
    n
}

/// The weight nobody owns alone: fixed fields, counts and outputs.
fn shared_weight(inputs: usize, output_script_lens: &[usize]) -> u64 {
    TX_FIXED_WEIGHT
        + 4 * (varint_len(inputs as u64) + varint_len(output_script_lens.len() as u64))
        + output_script_lens.iter().map(|&l| output_weight(l)).sum::<u64>()
}

/// Fee for `weight` at the schedule's rate, rounded up.
fn fee_for(schedule: &FeeSchedule, weight: u64) -> Result<Amount, FeeError> {
    schedule
        .fee_rate
        .checked_mul_by_weight(bitcoin::Weight::from_wu(weight))
        .ok_or(FeeError::Overflow)
}

/// The announced service fee on `deposited`: base + ppm, rounded down.
pub fn service_fee(schedule: &FeeSchedule, deposited: Amount) -> Result<Amount, FeeError> {
    let ppm = u128::from(deposited.to_sat()) * u128::from(schedule.service_ppm) / 1_000_000;
    let ppm = u64::try_from(ppm).map_err(|_| FeeError::Overflow)?;
    schedule.service_base.checked_add(Amount::from_sat(ppm)).ok_or(FeeError::Overflow)
}

/// What one registration brings to a funding transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingRequest {
    /// Its deposits: outpoint and the output they hold.
    pub deposits: Vec<(OutPoint, TxOut)>,
    /// The sum of its fixed leaves.
    pub requested: Amount,
    /// The scriptPubKey of its remainder leaf.
    pub remainder_script: ScriptBuf,
    /// The largest fee it accepts.
    pub max_fee: Amount,
}

/// One registration's fee, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeShare {
    /// Mining fee for its own inputs.
    pub inputs: Amount,
    /// Its share of the shared part.
    pub shared: Amount,
    /// The service fee.
    pub service: Amount,
    /// Its remainder leaf's amount.
    pub remainder: Amount,
}

impl FeeShare {
    /// Everything it pays.
    pub fn total(&self) -> Amount {
        self.inputs + self.shared + self.service
    }
}

/// The priced funding transaction of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundingPlan {
    /// One share per registration, in order.
    pub shares: Vec<FeeShare>,
    /// The coordinator's output amount (service fees plus rounding), zero if dropped as dust.
    pub coordinator_amount: Amount,
    /// The mining fee the transaction pays.
    pub mining_fee: Amount,
    /// Its exact weight.
    pub weight: u64,
    /// The sum of every leaf: the batch output's amount.
    pub batch_amount: Amount,
}

/// Prices a batch: fees per registration, remainders, the coordinator's output.
///
/// `batch_script_len` is the batch output's scriptPubKey length (34 for P2TR).
pub fn plan_funding(
    requests: &[FundingRequest],
    schedule: &FeeSchedule,
    coordinator_script: &ScriptBuf,
) -> Result<FundingPlan, FeeError> {
    if requests.is_empty() {
        return Err(FeeError::Empty);
    }
    let inputs: usize = requests.iter().map(|r| r.deposits.len()).sum();
    let mut services = Vec::with_capacity(requests.len());
    let mut service_total = Amount::ZERO;
    for (index, r) in requests.iter().enumerate() {
        if r.deposits.is_empty() {
            return Err(FeeError::NoDeposits(index));
        }
        let deposited = sum(r.deposits.iter().map(|(_, o)| o.value))?;
        let service = service_fee(schedule, deposited)?;
        service_total = service_total.checked_add(service).ok_or(FeeError::Overflow)?;
        services.push((deposited, service));
    }
    // The coordinator output exists when the service fees alone are not dust.
    let with_coordinator = service_total >= coordinator_script.minimal_non_dust();
    let mut scripts = vec![34usize];
    if with_coordinator {
        scripts.push(coordinator_script.len());
    }
    let weight = funding_weight(inputs, &scripts);
    // Priced on virtual bytes (weight rounded up to a multiple of 4), as relay policy measures.
    let mining_fee = fee_for(schedule, weight.div_ceil(4) * 4)?;

    let input_fees: Vec<Amount> = requests
        .iter()
        .map(|r| fee_for(schedule, r.deposits.len() as u64 * KEY_PATH_INPUT_WEIGHT))
        .collect::<Result<_, _>>()?;
    let shared_fee =
        mining_fee.checked_sub(sum(input_fees.iter().copied())?).unwrap_or(Amount::ZERO);
    let n = requests.len() as u64;
    let per_share = Amount::from_sat(shared_fee.to_sat().div_ceil(n));

    let mut shares = Vec::with_capacity(requests.len());
    let mut collected = Amount::ZERO;
    let mut batch_amount = Amount::ZERO;
    for (index, (r, ((deposited, service), inputs_fee))) in
        requests.iter().zip(services.into_iter().zip(input_fees)).enumerate()
    {
        let mut share =
            FeeShare { inputs: inputs_fee, shared: per_share, service, remainder: Amount::ZERO };
        let fee = share.total();
        if fee > r.max_fee {
            return Err(FeeError::FeeTooHigh { index, fee, max_fee: r.max_fee });
        }
        let dust = r.remainder_script.minimal_non_dust();
        let remainder = deposited
            .checked_sub(r.requested)
            .and_then(|a| a.checked_sub(fee))
            .filter(|a| *a >= dust)
            .ok_or(FeeError::InsufficientFunds {
                index,
                deposited,
                requested: r.requested,
                fee,
                dust,
            })?;
        share.remainder = remainder;
        collected = collected.checked_add(inputs_fee + per_share).ok_or(FeeError::Overflow)?;
        batch_amount = batch_amount
            .checked_add(r.requested)
            .and_then(|a| a.checked_add(remainder))
            .ok_or(FeeError::Overflow)?;
        shares.push(share);
    }
    let rounding = collected.checked_sub(mining_fee).unwrap_or(Amount::ZERO);
    let (coordinator_amount, mining_fee) = if with_coordinator {
        (service_total + rounding, mining_fee)
    } else {
        // Dust service fees go to the miners rather than to an unspendable output.
        (Amount::ZERO, mining_fee + rounding + service_total)
    };
    Ok(FundingPlan { shares, coordinator_amount, mining_fee, weight, batch_amount })
}

fn sum(mut amounts: impl Iterator<Item = Amount>) -> Result<Amount, FeeError> {
    amounts.try_fold(Amount::ZERO, |acc, a| acc.checked_add(a).ok_or(FeeError::Overflow))
}

/// The unsigned funding transaction: every deposit in registration order, output 0 the
/// batch output (the root node's input), output 1 the coordinator's (when not dust).
pub fn funding_tx(
    requests: &[FundingRequest],
    plan: &FundingPlan,
    batch_output: TxOut,
    coordinator_script: &ScriptBuf,
) -> Transaction {
    let input = requests
        .iter()
        .flat_map(|r| r.deposits.iter())
        .map(|(outpoint, _)| TxIn {
            previous_output: *outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        })
        .collect();
    let mut output = vec![batch_output];
    if plan.coordinator_amount > Amount::ZERO {
        output.push(TxOut {
            value: plan.coordinator_amount,
            script_pubkey: coordinator_script.clone(),
        });
    }
    Transaction { version: Version::TWO, lock_time: LockTime::ZERO, input, output }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{FeeRate, Txid};
    use proptest::prelude::*;

    fn p2tr(tag: u8) -> ScriptBuf {
        let mut bytes = vec![0x51, 0x20];
        bytes.extend([tag; 32]);
        ScriptBuf::from_bytes(bytes)
    }

    fn request(tag: u8, deposits: &[u64], requested: u64) -> FundingRequest {
        FundingRequest {
            deposits: deposits
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    (
                        OutPoint { txid: Txid::from_byte_array([tag; 32]), vout: i as u32 },
                        TxOut { value: Amount::from_sat(v), script_pubkey: p2tr(tag) },
                    )
                })
                .collect(),
            requested: Amount::from_sat(requested),
            remainder_script: p2tr(tag),
            max_fee: Amount::from_sat(100_000),
        }
    }

    #[test]
    fn weight_matches_a_real_signed_transaction() {
        let reqs = vec![request(1, &[50_000, 60_000], 0), request(2, &[70_000], 10_000)];
        let plan = plan_funding(&reqs, &FeeSchedule::default(), &p2tr(9)).unwrap();
        let batch = TxOut { value: plan.batch_amount, script_pubkey: p2tr(7) };
        let mut tx = funding_tx(&reqs, &plan, batch, &p2tr(9));
        for input in &mut tx.input {
            input.witness = Witness::from_slice(&[[0u8; 64]]);
        }
        assert_eq!(tx.weight().to_wu(), plan.weight);
        assert_eq!(tx.output.len(), 2);
    }

    #[test]
    fn max_inputs_is_tight() {
        let n = max_inputs(400_000, &[34, 34]);
        assert!(funding_weight(n, &[34, 34]) <= 400_000);
        assert!(funding_weight(n + 1, &[34, 34]) > 400_000);
        assert!(n > 1_700);
    }

    fn check_invariants(reqs: &[FundingRequest], schedule: &FeeSchedule) {
        let coord = p2tr(9);
        let Ok(plan) = plan_funding(reqs, schedule, &coord) else { return };
        let batch = TxOut { value: plan.batch_amount, script_pubkey: p2tr(7) };
        let tx = funding_tx(reqs, &plan, batch, &coord);
        let inputs: Amount = reqs.iter().flat_map(|r| &r.deposits).map(|(_, o)| o.value).sum();
        let outputs: Amount = tx.output.iter().map(|o| o.value).sum();
        assert_eq!(inputs, outputs + plan.mining_fee, "sum(in) = sum(out) + fee");
        let vsize = plan.weight.div_ceil(4);
        let needed = schedule.fee_rate.fee_vb(vsize).unwrap();
        assert!(plan.mining_fee.to_sat() * 1000 >= schedule.fee_rate.to_sat_per_kwu() * 4 * vsize);
        assert!(plan.mining_fee >= needed, "actual rate at least the announced one");
        for (r, share) in reqs.iter().zip(&plan.shares) {
            // Each pays for its own inputs at the announced rate, never another's.
            let own = schedule
                .fee_rate
                .fee_wu(bitcoin::Weight::from_wu(r.deposits.len() as u64 * KEY_PATH_INPUT_WEIGHT))
                .unwrap();
            assert_eq!(share.inputs, own);
            assert_eq!(share.shared, plan.shares[0].shared, "equal shares of the shared part");
            let deposited: Amount = r.deposits.iter().map(|(_, o)| o.value).sum();
            assert_eq!(deposited, r.requested + share.remainder + share.total());
        }
        // Shares exceed the shared part's cost by less than one sat per participant.
        let shared_cost = needed - plan.shares.iter().map(|s| s.inputs).sum::<Amount>();
        let n = reqs.len() as u64;
        assert!(plan.shares[0].shared.to_sat() * n >= shared_cost.to_sat());
        assert!(plan.shares[0].shared.to_sat() * n < shared_cost.to_sat() + n);
    }

    #[test]
    fn refuses_fee_above_max_and_insufficient_funds() {
        let mut r = request(1, &[50_000], 0);
        r.max_fee = Amount::from_sat(10);
        assert!(matches!(
            plan_funding(&[r], &FeeSchedule::default(), &p2tr(9)),
            Err(FeeError::FeeTooHigh { index: 0, .. })
        ));
        let r = request(1, &[5_000], 4_900);
        assert!(matches!(
            plan_funding(&[r], &FeeSchedule::default(), &p2tr(9)),
            Err(FeeError::InsufficientFunds { index: 0, .. })
        ));
        assert_eq!(plan_funding(&[], &FeeSchedule::default(), &p2tr(9)), Err(FeeError::Empty));
    }

    #[test]
    fn dust_service_fees_go_to_miners() {
        let schedule =
            FeeSchedule { service_base: Amount::from_sat(1), service_ppm: 0, ..Default::default() };
        let reqs = vec![request(1, &[50_000], 0)];
        let plan = plan_funding(&reqs, &schedule, &p2tr(9)).unwrap();
        assert_eq!(plan.coordinator_amount, Amount::ZERO);
        check_invariants(&reqs, &schedule);
    }

    proptest! {
        #[test]
        fn fee_invariants(
            deposits in proptest::collection::vec(proptest::collection::vec(20_000u64..5_000_000, 1..4), 1..30),
            rate in 250u64..50_000,
            base in 0u64..2_000,
            ppm in 0u32..5_000,
        ) {
            let schedule = FeeSchedule {
                fee_rate: FeeRate::from_sat_per_kwu(rate),
                service_base: Amount::from_sat(base),
                service_ppm: ppm,
            };
            let reqs: Vec<_> = deposits
                .iter()
                .enumerate()
                .map(|(i, d)| request(i as u8, d, d[0] / 3))
                .collect();
            check_invariants(&reqs, &schedule);
        }
    }
}
