//! Spending the wallet's own coins: what exits and reclaims paid it and what funds its
//! CPFP children all sit at the fee key's address, and `cohort send` pays them to any
//! address (key-path spends of the fee key, change back to it).

use bitcoin::absolute::LockTime;
use bitcoin::key::TapTweak;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use cohort_common::keys::Keypair;
use cohort_common::scripts::{key_spend_sighashes, key_spend_witness};
use cohort_common::standard::{money_sum, MAX_STANDARD_WEIGHT};

/// How much to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAmount {
    /// Every confirmed coin, less the fee; no change.
    All,
    /// Exactly this much; the rest, less the fee, back to the wallet.
    Exactly(Amount),
}

/// Errors building a send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The wallet has no confirmed coin.
    #[error("the wallet has no confirmed coin at its own address (exits and reclaims pay there)")]
    NoCoins,
    /// The coins do not cover the amount and the fee.
    #[error(
        "the wallet's {} sat do not cover {} sat and a fee of {} sat",
        available.to_sat(), amount.to_sat(), fee.to_sat()
    )]
    Insufficient {
        /// What the confirmed coins hold.
        available: Amount,
        /// What was asked (for `All`, what is left after the fee).
        amount: Amount,
        /// The fee.
        fee: Amount,
    },
    /// The amount is below the destination's dust limit.
    #[error("{} sat is below the destination's dust limit of {} sat", amount.to_sat(), dust.to_sat())]
    Dust {
        /// The amount.
        amount: Amount,
        /// The limit.
        dust: Amount,
    },
    /// The transaction would not be standard or the amounts overflow.
    #[error("{0}")]
    Shape(String),
}

/// A signed send: the transaction and what it pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The signed transaction.
    pub tx: Transaction,
    /// What the destination receives.
    pub amount: Amount,
    /// The mining fee.
    pub fee: Amount,
    /// The change back to the wallet (zero: none).
    pub change: Amount,
}

/// Pays `amount` of `coins` (outputs of `key`'s key-path P2TR) to `destination` at `rate`:
/// the largest coins first, change back to the key's script when it is not dust.
pub fn send(
    key: &Keypair,
    coins: &[(OutPoint, TxOut)],
    destination: &ScriptBuf,
    amount: SendAmount,
    rate: FeeRate,
) -> Result<Send, SendError> {
    if coins.is_empty() {
        return Err(SendError::NoCoins);
    }
    let mut coins = coins.to_vec();
    coins.sort_by_key(|(_, o)| std::cmp::Reverse(o.value));
    let total = |c: &[(OutPoint, TxOut)]| {
        money_sum(c.iter().map(|(_, o)| o.value))
            .map_err(|_| SendError::Shape("amounts overflow".into()))
    };
    let available = total(&coins)?;
    let own = coins[0].1.script_pubkey.clone();
    let dust = destination.minimal_non_dust();
    let (chosen, amount, fee, change) = match amount {
        SendAmount::All => {
            let fee = fee_of(&coins, destination, None, rate)?;
            let amount = available.checked_sub(fee).unwrap_or(Amount::ZERO);
            if amount < dust {
                return Err(SendError::Insufficient { available, amount, fee });
            }
            (coins, amount, fee, Amount::ZERO)
        }
        SendAmount::Exactly(amount) => {
            if amount < dust {
                return Err(SendError::Dust { amount, dust });
            }
            let mut chosen = Vec::new();
            let mut found = None;
            for coin in coins {
                chosen.push(coin);
                let have = total(&chosen)?;
                let with_change = fee_of(&chosen, destination, Some(&own), rate)?;
                let without = fee_of(&chosen, destination, None, rate)?;
                match have.checked_sub(amount) {
                    Some(left) if left >= with_change + own.minimal_non_dust() => {
                        found = Some((with_change, left - with_change));
                        break;
                    }
                    // Too little change to keep: it goes to the fee.
                    Some(left) if left >= without => {
                        found = Some((left, Amount::ZERO));
                        break;
                    }
                    _ => {}
                }
            }
            let Some((fee, change)) = found else {
                let fee = fee_of(&chosen, destination, Some(&own), rate)?;
                return Err(SendError::Insufficient { available, amount, fee });
            };
            (chosen, amount, fee, change)
        }
    };
    let mut output = vec![TxOut { value: amount, script_pubkey: destination.clone() }];
    if change > Amount::ZERO {
        output.push(TxOut { value: change, script_pubkey: own });
    }
    let mut tx = unsigned(&chosen, output);
    if tx.weight() > MAX_STANDARD_WEIGHT {
        return Err(SendError::Shape("too many coins for one standard transaction".into()));
    }
    let prevouts: Vec<TxOut> = chosen.iter().map(|(_, o)| o.clone()).collect();
    let sighashes =
        key_spend_sighashes(&tx, &prevouts).map_err(|e| SendError::Shape(e.to_string()))?;
    let keypair = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &key.secret);
    let tweaked = keypair.tap_tweak(SECP256K1, None).to_keypair();
    for (input, sighash) in tx.input.iter_mut().zip(sighashes) {
        let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash), &tweaked);
        input.witness = key_spend_witness(&sig);
    }
    Ok(Send { tx, amount, fee, change })
}

/// The fee of spending `coins` to `destination` (and `change` if given) at `rate`, on the
/// signed size.
fn fee_of(
    coins: &[(OutPoint, TxOut)],
    destination: &ScriptBuf,
    change: Option<&ScriptBuf>,
    rate: FeeRate,
) -> Result<Amount, SendError> {
    let mut output = vec![TxOut { value: Amount::ZERO, script_pubkey: destination.clone() }];
    if let Some(script) = change {
        output.push(TxOut { value: Amount::ZERO, script_pubkey: script.clone() });
    }
    let mut tx = unsigned(coins, output);
    for input in &mut tx.input {
        input.witness = Witness::from_slice(&[[0u8; 64]]);
    }
    rate.fee_vb(tx.weight().to_vbytes_ceil()).ok_or(SendError::Shape("fee overflow".into()))
}

/// Version 2, no lock time, every input of `coins` signalling replacement, witnesses
/// empty: the shape of a send and of a cooperative withdrawal.
pub(crate) fn unsigned(coins: &[(OutPoint, TxOut)], output: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: coins
            .iter()
            .map(|(outpoint, _)| TxIn {
                previous_output: *outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output,
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use cohort_common::consensus::verify_tx;
    use cohort_common::exit::p2tr_single;

    use super::*;

    fn coins(key: &Keypair, amounts: &[u64]) -> Vec<(OutPoint, TxOut)> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let outpoint =
                    OutPoint { txid: bitcoin::Txid::from_byte_array([i as u8 + 1; 32]), vout: 0 };
                (outpoint, TxOut { value: Amount::from_sat(*a), script_pubkey: p2tr_single(key) })
            })
            .collect()
    }

    #[test]
    fn a_send_spends_the_largest_coins_first_and_passes_the_script_checks() {
        let key = Keypair::random();
        let have = coins(&key, &[20_000, 70_000, 5_000]);
        let to = p2tr_single(&Keypair::random());
        let rate = FeeRate::from_sat_per_kwu(500);
        let sent =
            send(&key, &have, &to, SendAmount::Exactly(Amount::from_sat(60_000)), rate).unwrap();
        assert_eq!(sent.tx.input.len(), 1, "the 70,000 sat coin alone covers it");
        assert_eq!(sent.amount + sent.fee + sent.change, Amount::from_sat(70_000));
        assert_eq!(sent.fee, rate.fee_vb(sent.tx.vsize() as u64).unwrap());
        verify_tx(&sent.tx, &[have[1].1.clone()]).unwrap();

        let all = send(&key, &have, &to, SendAmount::All, rate).unwrap();
        assert_eq!((all.tx.input.len(), all.change), (3, Amount::ZERO));
        assert_eq!(all.amount + all.fee, Amount::from_sat(95_000));
        let prevouts: Vec<TxOut> = all
            .tx
            .input
            .iter()
            .map(|i| have.iter().find(|c| c.0 == i.previous_output).unwrap().1.clone())
            .collect();
        verify_tx(&all.tx, &prevouts).unwrap();

        let r = send(&key, &have, &to, SendAmount::Exactly(Amount::from_sat(95_000)), rate);
        assert!(matches!(r, Err(SendError::Insufficient { .. })), "{r:?}");
        let r = send(&key, &have, &to, SendAmount::Exactly(Amount::from_sat(10)), rate);
        assert!(matches!(r, Err(SendError::Dust { .. })), "{r:?}");
        assert_eq!(send(&key, &[], &to, SendAmount::All, rate), Err(SendError::NoCoins));
    }
}
