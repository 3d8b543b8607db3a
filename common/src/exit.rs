//! Unilateral exits: CPFP children that pay for zero-fee tree nodes through their P2A
//! anchor, and script-path reclaims of deposit-shaped outputs after their timeout.

use bitcoin::absolute::LockTime;
use bitcoin::key::TapTweak;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Weight, Witness,
};

use crate::keys::Keypair;
use crate::scripts::{key_spend_sighash, key_spend_witness, DepositScript, ScriptError};

/// Errors building exit transactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    /// The parent has no P2A anchor as its last output.
    #[error("transaction has no pay-to-anchor output to spend")]
    NoAnchor,
    /// The fee input cannot pay the package fee and keep a non-dust change.
    #[error("fee input of {available} cannot pay {fee} and keep at least {dust}")]
    FeeInputTooSmall {
        /// What the fee input holds.
        available: Amount,
        /// The fee needed.
        fee: Amount,
        /// The change output's dust limit.
        dust: Amount,
    },
    /// The output cannot pay its own reclaim fee and stay above dust.
    #[error("output of {amount} cannot pay reclaim fee {fee} and stay above dust")]
    TooSmallToReclaim {
        /// The output's amount.
        amount: Amount,
        /// The fee needed.
        fee: Amount,
    },
    /// A sighash could not be computed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// Fee arithmetic overflowed.
    #[error("fee overflow")]
    Overflow,
}

/// A confirmed key-path-only P2TR output of a single key that pays for CPFP children.
#[derive(Debug, Clone)]
pub struct FeeInput {
    /// Where it is.
    pub outpoint: OutPoint,
    /// What it holds (a P2TR of `key` with no script tree).
    pub txout: TxOut,
    /// Its key.
    pub key: Keypair,
}

/// The key-path-only P2TR scriptPubKey of a single key (BIP-86 style tweak).
pub fn p2tr_single(key: &Keypair) -> ScriptBuf {
    ScriptBuf::new_p2tr(SECP256K1, key.xonly(), None)
}

fn vsize_fee(rate: FeeRate, weight: Weight) -> Result<Amount, ExitError> {
    rate.fee_vb(weight.to_vbytes_ceil()).ok_or(ExitError::Overflow)
}

/// A version-3 child spending `parent`'s P2A anchor and `fee`, paying the package
/// (parent + child) at `rate`, with the change back to `fee`'s own script.
pub fn cpfp_child(
    parent: &Transaction,
    fee: &FeeInput,
    rate: FeeRate,
) -> Result<Transaction, ExitError> {
    let anchor_vout = parent.output.len().checked_sub(1).ok_or(ExitError::NoAnchor)?;
    let anchor = parent.output[anchor_vout].clone();
    if anchor.script_pubkey != crate::scripts::anchor_output().script_pubkey {
        return Err(ExitError::NoAnchor);
    }
    let mut child = Transaction {
        version: Version(3),
        lock_time: LockTime::ZERO,
        input: vec![
            TxIn {
                previous_output: OutPoint { txid: parent.compute_txid(), vout: anchor_vout as u32 },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ZERO,
                witness: Witness::new(),
            },
            TxIn {
                previous_output: fee.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ZERO,
                witness: Witness::from_slice(&[[0u8; 64]]),
            },
        ],
        output: vec![TxOut { value: Amount::ZERO, script_pubkey: fee.txout.script_pubkey.clone() }],
    };
    let package_weight = parent.weight() + child.weight();
    let needed = vsize_fee(rate, package_weight)?;
    let dust = fee.txout.script_pubkey.minimal_non_dust();
    let change = fee
        .txout
        .value
        .checked_sub(needed)
        .filter(|c| *c >= dust)
        .ok_or(ExitError::FeeInputTooSmall { available: fee.txout.value, fee: needed, dust })?;
    child.output[0].value = change;
    let prevouts = [anchor, fee.txout.clone()];
    let sighash = key_spend_sighash(&child, 1, &prevouts)?;
    let tweaked = fee.key_pair().tap_tweak(SECP256K1, None);
    let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash), &tweaked.to_keypair());
    child.input[1].witness = key_spend_witness(&sig);
    Ok(child)
}

impl FeeInput {
    fn key_pair(&self) -> bitcoin::secp256k1::Keypair {
        bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &self.key.secret)
    }
}

/// Spends a deposit-shaped output (a static deposit or a virtual-deposit leaf) through
/// its script path after its timeout, paying `destination` at `rate`.
pub fn reclaim_tx(
    script: &DepositScript,
    user: &Keypair,
    outpoint: OutPoint,
    txout: &TxOut,
    destination: ScriptBuf,
    rate: FeeRate,
) -> Result<Transaction, ExitError> {
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: outpoint,
            script_sig: ScriptBuf::new(),
            sequence: script.reclaim_sequence(),
            witness: script.reclaim_witness(
                &bitcoin::secp256k1::schnorr::Signature::from_slice(&[1u8; 64])
                    .map_err(|_| ExitError::Overflow)?,
            ),
        }],
        output: vec![TxOut { value: Amount::ZERO, script_pubkey: destination }],
    };
    let fee = vsize_fee(rate, tx.weight())?;
    let dust = tx.output[0].script_pubkey.minimal_non_dust();
    tx.output[0].value = txout
        .value
        .checked_sub(fee)
        .filter(|v| *v >= dust)
        .ok_or(ExitError::TooSmallToReclaim { amount: txout.value, fee })?;
    let sighash = script.reclaim_sighash(&tx, 0, std::slice::from_ref(txout))?;
    let keypair = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &user.secret);
    let sig = SECP256K1.sign_schnorr(&Message::from_digest(sighash), &keypair);
    tx.input[0].witness = script.reclaim_witness(&sig);
    Ok(tx)
}
