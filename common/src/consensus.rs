//! Script verification of whole transactions with Bitcoin Core's current interpreter
//! (libbitcoinkernel through the `bitcoinkernel` crate, Taproot flags), inputs checked
//! in parallel.
//!
//! The transaction is parsed once and its BIP-143/BIP-341 hashes (prevouts, amounts,
//! scripts, sequences, outputs) are precomputed once from all spent outputs, so each
//! input's check costs its own script only: a 1,700-input funding transaction is
//! linear in its inputs. Every input still runs through Core's script interpreter.

use bitcoin::consensus::encode::serialize;
use bitcoin::{Transaction, TxOut};
use bitcoinkernel::{KernelError, PrecomputedTransactionData, ScriptVerifyError};
use rayon::prelude::*;

/// Script verification flags: every consensus rule up to and including Taproot
/// (P2SH, DERSIG, NULLDUMMY, CHECKLOCKTIMEVERIFY, CHECKSEQUENCEVERIFY, witness, Taproot).
pub const VERIFY_FLAGS: u32 = bitcoinkernel::VERIFY_ALL_PRE_TAPROOT | bitcoinkernel::VERIFY_TAPROOT;

/// Inputs from which verification is spread over rayon.
const PARALLEL_FROM: usize = 4;

/// What Core's script check reported for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The input does not satisfy the script it spends (bad signature, wrong amount
    /// or spent output committed to, failing script).
    #[error("script does not verify")]
    Invalid,
    /// The flags asked for are not a valid combination (a bug in [`VERIFY_FLAGS`]).
    #[error("invalid combination of verification flags")]
    InvalidFlags,
    /// Taproot verification ran without the spent outputs.
    #[error("spent outputs required")]
    SpentOutputsRequired,
}

/// Why a transaction's scripts do not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// The number of spent outputs given differs from the number of inputs.
    #[error("{spent} spent outputs given for {inputs} inputs")]
    SpentCountMismatch {
        /// Inputs of the transaction.
        inputs: usize,
        /// Spent outputs given.
        spent: usize,
    },
    /// A spent output's value does not fit the library's integer type.
    #[error("spent output of input {input} does not fit libbitcoinkernel limits")]
    SpentOutputTooLarge {
        /// Index of the input.
        input: usize,
    },
    /// libbitcoinkernel could not take the transaction or its spent outputs.
    #[error("libbitcoinkernel refused to load the transaction or its spent outputs")]
    Unloadable,
    /// An input's script failed.
    #[error("input {input} fails script verification: {error}")]
    Script {
        /// Index of the first failing input.
        input: usize,
        /// Core's verdict ([`ScriptError::Invalid`] for a plain script failure).
        error: ScriptError,
    },
}

/// The transaction and its spent outputs, loaded into libbitcoinkernel once.
struct Loaded {
    tx: bitcoinkernel::Transaction,
    spent: Vec<(bitcoinkernel::ScriptPubkey, i64)>,
    precomputed: PrecomputedTransactionData,
}

impl Loaded {
    fn new(tx: &Transaction, spent: &[TxOut]) -> Result<Self, ConsensusError> {
        let kernel_tx = bitcoinkernel::Transaction::new(&serialize(tx))
            .map_err(|_| ConsensusError::Unloadable)?;
        let mut scripts = Vec::with_capacity(spent.len());
        let mut outs = Vec::with_capacity(spent.len());
        for (input, out) in spent.iter().enumerate() {
            let value = i64::try_from(out.value.to_sat())
                .map_err(|_| ConsensusError::SpentOutputTooLarge { input })?;
            let script = bitcoinkernel::ScriptPubkey::new(out.script_pubkey.as_bytes())
                .map_err(|_| ConsensusError::Unloadable)?;
            outs.push(bitcoinkernel::TxOut::new(&script, value));
            scripts.push((script, value));
        }
        // Hashes every prevout, amount, script, sequence and output once.
        let precomputed = PrecomputedTransactionData::new(&kernel_tx, &outs)
            .map_err(|_| ConsensusError::Unloadable)?;
        Ok(Loaded { tx: kernel_tx, spent: scripts, precomputed })
    }

    fn check(&self, input: usize) -> Result<(), ConsensusError> {
        let (script, value) = &self.spent[input];
        bitcoinkernel::verify(
            script,
            Some(*value),
            &self.tx,
            input,
            Some(VERIFY_FLAGS),
            &self.precomputed,
        )
        .map_err(|e| ConsensusError::Script { input, error: script_error(e) })
    }
}

fn script_error(e: KernelError) -> ScriptError {
    match e {
        KernelError::ScriptVerify(ScriptVerifyError::SpentOutputsRequired) => {
            ScriptError::SpentOutputsRequired
        }
        KernelError::ScriptVerify(
            ScriptVerifyError::InvalidFlags | ScriptVerifyError::InvalidFlagsCombination,
        ) => ScriptError::InvalidFlags,
        _ => ScriptError::Invalid,
    }
}

/// Verifies every input of `tx` against `spent` (the outputs it spends, in input
/// order) with [`VERIFY_FLAGS`]. On failure names the lowest failing input.
pub fn verify_tx(tx: &Transaction, spent: &[TxOut]) -> Result<(), ConsensusError> {
    let inputs = tx.input.len();
    if spent.len() != inputs {
        return Err(ConsensusError::SpentCountMismatch { inputs, spent: spent.len() });
    }
    if inputs == 0 {
        return Ok(());
    }
    let loaded = Loaded::new(tx, spent)?;
    let results: Vec<Result<(), ConsensusError>> = if inputs < PARALLEL_FROM {
        (0..inputs).map(|i| loaded.check(i)).collect()
    } else {
        (0..inputs).into_par_iter().map(|i| loaded.check(i)).collect()
    };
    results.into_iter().collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::key::{Keypair, TapTweak};
    use bitcoin::secp256k1::{Message, SECP256K1};
    use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
    use bitcoin::transaction::Version;
    use bitcoin::{absolute, Amount, OutPoint, ScriptBuf, Sequence, TxIn, Txid, Witness};

    fn key(i: u8) -> Keypair {
        Keypair::from_seckey_slice(SECP256K1, &[i.max(1); 32]).expect("valid key")
    }

    /// A transaction spending `n` P2TR key-path outputs, all signed.
    fn signed(n: usize) -> (Transaction, Vec<TxOut>) {
        let spent: Vec<TxOut> = (0..n)
            .map(|i| {
                let (x, _) = key(i as u8 + 1).x_only_public_key();
                TxOut {
                    value: Amount::from_sat(10_000 + i as u64),
                    script_pubkey: ScriptBuf::new_p2tr(SECP256K1, x, None),
                }
            })
            .collect();
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: (0..n)
                .map(|i| TxIn {
                    previous_output: OutPoint::new(Txid::all_zeros(), i as u32),
                    sequence: Sequence::MAX,
                    ..TxIn::default()
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(5_000),
                script_pubkey: ScriptBuf::new_p2a(),
            }],
        };
        let prevouts = Prevouts::All(&spent);
        let mut sigs = Vec::new();
        let mut cache = SighashCache::new(&tx);
        for i in 0..n {
            let hash = cache
                .taproot_key_spend_signature_hash(i, &prevouts, TapSighashType::Default)
                .expect("sighash");
            let tweaked = key(i as u8 + 1).tap_tweak(SECP256K1, None);
            let msg = Message::from_digest(hash.to_byte_array());
            sigs.push(SECP256K1.sign_schnorr_no_aux_rand(&msg, &tweaked.to_keypair()));
        }
        for (input, sig) in tx.input.iter_mut().zip(sigs) {
            input.witness = Witness::from_slice(&[sig.as_ref().as_slice()]);
        }
        (tx, spent)
    }

    #[test]
    fn accepts_signed_key_spends_serial_and_parallel() {
        for n in [1, 9] {
            let (tx, spent) = signed(n);
            assert_eq!(verify_tx(&tx, &spent), Ok(()));
        }
    }

    #[test]
    fn names_lowest_failing_input() {
        let (mut tx, spent) = signed(9);
        for i in [7, 3] {
            let mut sig = tx.input[i].witness.to_vec().remove(0);
            sig[5] ^= 1;
            tx.input[i].witness = Witness::from_slice(&[sig]);
        }
        assert_eq!(
            verify_tx(&tx, &spent),
            Err(ConsensusError::Script { input: 3, error: ScriptError::Invalid })
        );
    }

    #[test]
    fn every_input_is_checked_down_to_the_last() {
        let (mut tx, spent) = signed(40);
        let mut sig = tx.input[39].witness.to_vec().remove(0);
        sig[63] ^= 0x80;
        tx.input[39].witness = Witness::from_slice(&[sig]);
        assert_eq!(
            verify_tx(&tx, &spent),
            Err(ConsensusError::Script { input: 39, error: ScriptError::Invalid })
        );
    }

    #[test]
    fn wrong_spent_script_fails_taproot() {
        let (tx, mut spent) = signed(2);
        spent[1].script_pubkey = spent[0].script_pubkey.clone();
        assert!(matches!(
            verify_tx(&tx, &spent),
            Err(ConsensusError::Script { error: ScriptError::Invalid, .. })
        ));
    }

    #[test]
    fn wrong_spent_amount_fails_taproot() {
        let (tx, mut spent) = signed(2);
        spent[1].value = Amount::from_sat(1);
        assert!(matches!(verify_tx(&tx, &spent), Err(ConsensusError::Script { input: 0, .. })));
    }

    #[test]
    fn spent_count_must_match() {
        let (tx, spent) = signed(2);
        assert_eq!(
            verify_tx(&tx, &spent[..1]),
            Err(ConsensusError::SpentCountMismatch { inputs: 2, spent: 1 })
        );
    }

    #[test]
    fn p2a_anchor_spends_with_empty_witness() {
        let spent = vec![TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_p2a() }];
        let tx = Transaction {
            version: Version::non_standard(3),
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::all_zeros(), 0),
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        };
        assert_eq!(spent[0].script_pubkey.as_bytes(), [0x51, 0x02, 0x4e, 0x73]);
        assert_eq!(verify_tx(&tx, &spent), Ok(()));
    }
}
