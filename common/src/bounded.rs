//! Consensus decoding of peer- or file-supplied transactions with every count checked
//! against the bytes that back it, before rust-bitcoin allocates for it.
//!
//! rust-bitcoin reserves room from a count before reading what it counts: a witness's
//! element count (up to four million) reserves four bytes per element, and a vector of
//! inputs or outputs reserves up to 1 MB. A few hundred hostile bytes inside a message body
//! could so make a decoder hold tens of MiB (found by the `proposal_body` fuzz target:
//! 238 bytes held 23 MiB). [`decode`] first walks the encoding without allocating and
//! refuses any count or length that the bytes left cannot hold (every input takes at least
//! 41 bytes, every output 9, every witness element 1), so what rust-bitcoin then reserves
//! is bounded by a small multiple of the input's length. The walk only bounds claims; the
//! value itself is still decoded, and judged, by rust-bitcoin.

use bitcoin::consensus::encode::{self, Decodable};
use bitcoin::{Transaction, TxOut};

/// Smallest encoding of an input: outpoint (36), empty script (1), sequence (4).
const MIN_TXIN_LEN: usize = 41;
/// Smallest encoding of an output: amount (8), empty script (1).
const MIN_TXOUT_LEN: usize = 9;
/// Smallest encoding of a witness element: its length (1).
const MIN_WITNESS_ELEMENT_LEN: usize = 1;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundedError {
    /// A count or length claims more than the bytes left can hold.
    #[error("{what} claims {claimed} but only {left} bytes are left")]
    Overclaim {
        /// What was counted.
        what: &'static str,
        /// The count or length claimed.
        claimed: u64,
        /// Bytes left after the claim.
        left: usize,
    },
    /// The bytes end inside a field.
    #[error("the encoding ends inside {0}")]
    Truncated(&'static str),
    /// The segwit flag byte is not 1.
    #[error("unsupported segwit flag {0}")]
    SegwitFlag(u8),
    /// rust-bitcoin refused the (bounded) encoding.
    #[error("invalid consensus encoding: {0}")]
    Consensus(String),
}

/// A consensus-encoded type whose claims [`decode`] can check before decoding.
pub trait Bounded: Decodable {
    /// Walks one encoded value, refusing any count the remaining bytes cannot back.
    #[doc(hidden)]
    fn walk(walk: &mut Walk<'_>) -> Result<(), BoundedError>;
}

/// Decodes exactly one `T` from `bytes`, after checking every count it claims.
pub fn decode<T: Bounded>(bytes: &[u8]) -> Result<T, BoundedError> {
    T::walk(&mut Walk { bytes, pos: 0 })?;
    encode::deserialize(bytes).map_err(|e| BoundedError::Consensus(e.to_string()))
}

/// A cursor over encoded bytes that reads counts and skips fields without allocating.
#[doc(hidden)]
#[derive(Debug)]
pub struct Walk<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), BoundedError> {
        if n > self.left() {
            return Err(BoundedError::Truncated(what));
        }
        self.pos += n;
        Ok(())
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, BoundedError> {
        let b = *self.bytes.get(self.pos).ok_or(BoundedError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a compact-size integer (canonical form is left to rust-bitcoin).
    fn compact(&mut self, what: &'static str) -> Result<u64, BoundedError> {
        let width = match self.byte(what)? {
            n @ 0..=0xfc => return Ok(u64::from(n)),
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
        };
        let mut value = [0u8; 8];
        let start = self.pos;
        self.skip(width, what)?;
        value[..width].copy_from_slice(&self.bytes[start..start + width]);
        Ok(u64::from_le_bytes(value))
    }

    /// Reads a count of items of at least `min_len` bytes each and checks the bytes left
    /// can hold that many.
    fn count(&mut self, what: &'static str, min_len: usize) -> Result<usize, BoundedError> {
        let claimed = self.compact(what)?;
        let left = self.left();
        match usize::try_from(claimed) {
            Ok(n) if n <= left / min_len => Ok(n),
            _ => Err(BoundedError::Overclaim { what, claimed, left }),
        }
    }

    /// Skips a length-prefixed byte string after checking its length against the bytes left.
    fn var_bytes(&mut self, what: &'static str) -> Result<(), BoundedError> {
        let len = self.count(what, 1)?;
        self.skip(len, what)
    }
}

fn walk_txout(walk: &mut Walk<'_>) -> Result<(), BoundedError> {
    walk.skip(8, "an output's amount")?;
    walk.var_bytes("an output's script")
}

impl Bounded for Transaction {
    fn walk(walk: &mut Walk<'_>) -> Result<(), BoundedError> {
        walk.skip(4, "the version")?;
        let mut inputs = walk.count("the input count", MIN_TXIN_LEN)?;
        let segwit = inputs == 0;
        if segwit {
            match walk.byte("the segwit flag")? {
                1 => inputs = walk.count("the input count", MIN_TXIN_LEN)?,
                flag => return Err(BoundedError::SegwitFlag(flag)),
            }
        }
        for _ in 0..inputs {
            walk.skip(36, "an outpoint")?;
            walk.var_bytes("a scriptSig")?;
            walk.skip(4, "a sequence")?;
        }
        let outputs = walk.count("the output count", MIN_TXOUT_LEN)?;
        for _ in 0..outputs {
            walk_txout(walk)?;
        }
        if segwit {
            for _ in 0..inputs {
                let elements = walk.count("a witness's element count", MIN_WITNESS_ELEMENT_LEN)?;
                for _ in 0..elements {
                    walk.var_bytes("a witness element")?;
                }
            }
        }
        walk.skip(4, "the lock time")
    }
}

impl Bounded for TxOut {
    fn walk(walk: &mut Walk<'_>) -> Result<(), BoundedError> {
        walk_txout(walk)
    }
}

impl Bounded for Vec<TxOut> {
    fn walk(walk: &mut Walk<'_>) -> Result<(), BoundedError> {
        let outputs = walk.count("the output count", MIN_TXOUT_LEN)?;
        for _ in 0..outputs {
            walk_txout(walk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, Witness};

    fn sample_tx(witness: bool) -> Transaction {
        let mut input = TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        };
        if witness {
            input.witness = Witness::from_slice(&[vec![7u8; 64], vec![], vec![1u8; 300]]);
        }
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![input.clone(), input],
            output: vec![TxOut { value: Amount::from_sat(1), script_pubkey: ScriptBuf::new() }],
        }
    }

    #[test]
    fn valid_encodings_decode_as_rust_bitcoin_decodes_them() {
        for witness in [false, true] {
            let tx = sample_tx(witness);
            let bytes = encode::serialize(&tx);
            assert_eq!(decode::<Transaction>(&bytes), Ok(tx.clone()));
            let outs = encode::serialize(&tx.output);
            assert_eq!(decode::<Vec<TxOut>>(&outs), Ok(tx.output.clone()));
            // Every strict prefix is refused, by the walk or by rust-bitcoin.
            for cut in 0..bytes.len() {
                assert!(decode::<Transaction>(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
            }
        }
    }

    #[test]
    fn a_witness_count_the_bytes_cannot_hold_is_refused_before_decoding() {
        // Version, segwit marker and flag, one input, no output, then a witness claiming
        // four million elements: rust-bitcoin would reserve 16 MB for their positions.
        let mut bytes = vec![2, 0, 0, 0, 0, 1, 1];
        bytes.extend([0u8; 36]);
        bytes.extend([0, 0xff, 0xff, 0xff, 0xff, 0]);
        bytes.extend([0xfe, 0x00, 0x09, 0x3d, 0x00]);
        bytes.extend([0u8; 8]);
        let err = decode::<Transaction>(&bytes).unwrap_err();
        assert!(
            matches!(err, BoundedError::Overclaim { what: "a witness's element count", .. }),
            "{err}"
        );
    }

    #[test]
    fn input_and_output_counts_are_checked_against_the_bytes_left() {
        // 0xfd 0xff 0xff: 65,535 inputs claimed in a 20-byte transaction.
        let bytes = [2, 0, 0, 0, 0xfd, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode::<Transaction>(&bytes),
            Err(BoundedError::Overclaim { what: "the input count", claimed: 65_535, .. })
        ));
        let outs = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode::<Vec<TxOut>>(&outs),
            Err(BoundedError::Overclaim { what: "the output count", .. })
        ));
        assert_eq!(decode::<Transaction>(&[2, 0, 0, 0, 0, 2]), Err(BoundedError::SegwitFlag(2)));
    }
}
