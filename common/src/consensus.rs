//! Script verification of whole transactions with Bitcoin Core's consensus library
//! (`bitcoinconsensus` 0.106, Taproot flags), inputs checked in parallel.
//!
//! libbitcoinconsensus deserializes the transaction and hashes all spent outputs on
//! every call, so one input costs `O(inputs)`; a 1,700-input funding transaction is
//! therefore verified on rayon, one call per input, from one serialization.

use bitcoin::consensus::encode::serialize;
use bitcoin::{Transaction, TxOut};
use rayon::prelude::*;

/// Script verification flags: everything up to and including Taproot.
pub const VERIFY_FLAGS: u32 =
    bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;

/// Inputs from which verification is spread over rayon.
const PARALLEL_FROM: usize = 4;

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
    /// A spent output's value or script does not fit the library's integer types.
    #[error("spent output of input {input} does not fit libbitcoinconsensus limits")]
    SpentOutputTooLarge {
        /// Index of the input.
        input: usize,
    },
    /// The serialized transaction is larger than the library accepts.
    #[error("transaction of {bytes} bytes is too large to verify")]
    TxTooLarge {
        /// Serialized size.
        bytes: usize,
    },
    /// An input's script failed.
    #[error("input {input} fails script verification: {error}")]
    Script {
        /// Index of the first failing input.
        input: usize,
        /// libbitcoinconsensus's error (`ERR_SCRIPT` for a plain script failure).
        error: bitcoinconsensus::Error,
    },
}

/// Verifies every input of `tx` against `spent` (the outputs it spends, in input
/// order) with [`VERIFY_FLAGS`]. On failure names the lowest failing input.
pub fn verify_tx(tx: &Transaction, spent: &[TxOut]) -> Result<(), ConsensusError> {
    let inputs = tx.input.len();
    if spent.len() != inputs {
        return Err(ConsensusError::SpentCountMismatch { inputs, spent: spent.len() });
    }
    let bytes = serialize(tx);
    if u32::try_from(bytes.len()).is_err() {
        return Err(ConsensusError::TxTooLarge { bytes: bytes.len() });
    }
    // Check the integer conversions once; the per-thread pointer arrays reuse them.
    let mut sizes = Vec::with_capacity(inputs);
    for (input, out) in spent.iter().enumerate() {
        let len = u32::try_from(out.script_pubkey.len());
        let value = i64::try_from(out.value.to_sat());
        match (len, value) {
            (Ok(len), Ok(value)) => sizes.push((len, value)),
            _ => return Err(ConsensusError::SpentOutputTooLarge { input }),
        }
    }
    // `bitcoinconsensus::Utxo` holds raw pointers into `spent`, which outlives every
    // call below; it is neither Send nor Sync, so each rayon job builds its own array.
    let utxos = || -> Vec<bitcoinconsensus::Utxo> {
        spent
            .iter()
            .zip(&sizes)
            .map(|(out, &(len, value))| bitcoinconsensus::Utxo {
                script_pubkey: out.script_pubkey.as_bytes().as_ptr(),
                script_pubkey_len: len,
                value,
            })
            .collect()
    };
    let check = |utxos: &mut Vec<bitcoinconsensus::Utxo>, input: usize| {
        let out = &spent[input];
        bitcoinconsensus::verify_with_flags(
            out.script_pubkey.as_bytes(),
            out.value.to_sat(),
            &bytes,
            Some(utxos.as_slice()),
            input,
            VERIFY_FLAGS,
        )
        .map_err(|error| ConsensusError::Script { input, error })
    };
    let results: Vec<Result<(), ConsensusError>> = if inputs < PARALLEL_FROM {
        let mut u = utxos();
        (0..inputs).map(|i| check(&mut u, i)).collect()
    } else {
        (0..inputs).into_par_iter().map_init(utxos, check).collect()
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
            Err(ConsensusError::Script { input: 3, error: bitcoinconsensus::Error::ERR_SCRIPT })
        );
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
