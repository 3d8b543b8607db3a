//! Wire codec: the bincode body encoding, length-prefixed frames and pre-encoded values.
//!
//! This is the only module that names `bincode` (pinned at `=2.0.1`, unmaintained), so
//! the body encoding can be swapped by editing this file alone.
//!
//! # Body encoding
//!
//! Bodies use bincode's `standard()` configuration: **little-endian**, variable-length
//! integers (a `u64` below 251 takes one byte), enum variants and lengths as varints.
//! Decoding runs with a byte limit: bincode counts every byte a string or byte-string
//! length prefix claims *before* it allocates for it, so a hostile prefix inside a body
//! fails with [`CodecError::LimitExceeded`] instead of allocating. The limit is a
//! compile-time parameter in bincode, so [`decode`] rounds the caller's limit up to the
//! next power of two (at least 4 KiB, at most [`MAX_DECODE_LIMIT`]); an input longer than
//! the requested limit is refused outright. The limit is also capped at 16 times the
//! input's length (bincode counts up to 16 bytes per input byte, a primitive's full
//! width), so a short body cannot make the decoder reserve up to the caller's limit.
//! Sequences are not claimed up front: serde
//! preallocates at most 1 MiB per sequence from a length prefix and then has to read
//! every element, so a lying sequence length only ends the decode early.
//! Trailing bytes after the value are an error.
//!
//! # Frames
//!
//! A frame is a 4-byte big-endian body length followed by the body. [`FrameDecoder`]
//! and [`read_frame_len`] refuse a length above `max_frame` as soon as the 4 header
//! bytes are known, before any of the body is buffered or allocated.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of the frame header (a big-endian `u32`).
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest byte limit [`decode`] honours; larger limits are treated as this one.
pub const MAX_DECODE_LIMIT: usize = 1 << 30;

/// Smallest limit bucket; smaller limits are rounded up to it.
const MIN_DECODE_BUCKET_LOG2: u32 = 12;

/// Most bytes bincode counts against the limit per input byte: it counts a primitive's
/// full width (up to 16 bytes for a `u128`) even when its varint takes one byte.
const MAX_CLAIM_PER_INPUT_BYTE: usize = 16;

/// Errors encoding or decoding bodies and frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame's length is above the largest frame accepted or produced.
    #[error("frame of {len} bytes exceeds the largest frame of {max} bytes")]
    FrameTooLarge {
        /// Length of the body the header announces (or the encoder produced).
        len: u64,
        /// Largest body length allowed.
        max: u32,
    },
    /// The bytes handed to [`decode`] are longer than its limit.
    #[error("body of {len} bytes exceeds the decode limit of {limit} bytes")]
    BodyTooLarge {
        /// Length of the input.
        len: usize,
        /// The decode limit.
        limit: usize,
    },
    /// A length prefix inside the body claims more bytes than the decode limit allows.
    #[error("body claims more than the decode limit of {limit} bytes")]
    LimitExceeded {
        /// The effective decode limit (the requested one rounded up to a power of two).
        limit: usize,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("invalid body: {0}")]
    Decode(String),
    /// The body decodes to a value but has bytes left after it.
    #[error("{extra} trailing bytes after a value of {read} bytes")]
    TrailingBytes {
        /// Bytes the value used.
        read: usize,
        /// Bytes left over.
        extra: usize,
    },
    /// A value could not be encoded (a serde implementation refused it).
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// The one bincode configuration every body uses (see the module documentation).
fn config<const LIMIT: usize>() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<LIMIT>()
}

/// Encoding needs no limit; this configuration writes exactly what [`config`] reads.
fn encode_config() -> bincode::config::Configuration {
    bincode::config::standard().with_little_endian().with_variable_int_encoding()
}

/// Encodes a value into a body.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(msg, encode_config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// The length of a value's body encoding, computed without writing it (an already
/// [`Encoded`] body inside it is counted, not copied).
pub fn encoded_len<T: Serialize + ?Sized>(msg: &T) -> Result<usize, CodecError> {
    let mut writer = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut writer, encode_config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(writer.bytes_written)
}

/// Appends the body encoding of a value to `out`, returning the number of bytes written.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<usize, CodecError> {
    bincode::serde::encode_into_std_write(msg, out, encode_config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a body, reserving at most about `limit` bytes (see the module documentation).
///
/// Fails if `bytes` is longer than `limit`, if a length prefix claims more than the
/// limit, if the bytes are not a valid encoding, or if bytes are left after the value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::BodyTooLarge { len: bytes.len(), limit });
    }
    // A valid body never claims more than its own bytes can account for, so a short body
    // gets a small budget: a length prefix in it cannot reserve up to `limit`.
    let log2 = limit
        .min(bytes.len().saturating_mul(MAX_CLAIM_PER_INPUT_BYTE))
        .min(MAX_DECODE_LIMIT)
        .checked_next_power_of_two()
        .map_or(30, |p| p.trailing_zeros())
        .max(MIN_DECODE_BUCKET_LOG2);
    macro_rules! buckets {
        ($($n:literal)*) => {
            match log2 {
                $($n => decode_limited::<T, { 1usize << $n }>(bytes),)*
                _ => decode_limited::<T, MAX_DECODE_LIMIT>(bytes),
            }
        };
    }
    buckets!(12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, config::<LIMIT>())
        .map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => {
                CodecError::LimitExceeded { limit: LIMIT }
            }
            other => CodecError::Decode(other.to_string()),
        })?;
    match bytes.len().checked_sub(read) {
        Some(0) => Ok(value),
        Some(extra) => Err(CodecError::TrailingBytes { read, extra }),
        None => Err(CodecError::Decode(format!("decoder read {read} of {} bytes", bytes.len()))),
    }
}

/// Encodes a value as one frame (header and body), refusing a body above `max_frame`.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T, max_frame: u32) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    let len = encode_into(msg, &mut out)?;
    let header = match u32::try_from(len) {
        Ok(l) if l <= max_frame => l.to_be_bytes(),
        _ => {
            let len = u64::try_from(len).unwrap_or(u64::MAX);
            return Err(CodecError::FrameTooLarge { len, max: max_frame });
        }
    };
    out[..FRAME_HEADER_LEN].copy_from_slice(&header);
    Ok(out)
}

/// Reads a frame header, refusing a length above `max_frame`; returns the body length.
///
/// For stream readers: read 4 bytes, call this, then read exactly that many bytes.
pub fn read_frame_len(header: [u8; FRAME_HEADER_LEN], max_frame: u32) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header);
    if len > max_frame {
        return Err(CodecError::FrameTooLarge { len: u64::from(len), max: max_frame });
    }
    usize::try_from(len)
        .map_err(|_| CodecError::FrameTooLarge { len: u64::from(len), max: max_frame })
}

/// Splits a byte stream into frame bodies, incrementally.
///
/// Call [`push`](Self::push) with bytes as they arrive, then [`next_frame`](Self::next_frame)
/// until it returns `Ok(None)`. An oversize header is reported as soon as its 4 bytes are
/// in; the error repeats on every later call (the stream cannot be resynchronised, so
/// close it). Calling `next_frame` after every `push` keeps the buffer at most one frame
/// plus one read.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: u32,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`; consumed bytes are dropped lazily.
    start: usize,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        FrameDecoder { max_frame, buf: Vec::new(), start: 0 }
    }

    /// The largest body length accepted.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame body, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(header) = pending.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = read_frame_len(*header, self.max_frame)?;
        let end = FRAME_HEADER_LEN.checked_add(len).ok_or(CodecError::FrameTooLarge {
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: self.max_frame,
        })?;
        let Some(body) = pending.get(FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.start += end;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(body))
    }
}

/// The body encoding of a `T`, made once and shared cheaply.
///
/// A proposal body common to a whole batch is encoded once and each participant's
/// message only copies the bytes. On the wire it is a length-prefixed byte string, so
/// a message holding an `Encoded<T>` decodes without decoding the `T`; call
/// [`decode`](Self::decode) for that.
pub struct Encoded<T> {
    bytes: Arc<[u8]>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `value` once.
    pub fn new(value: &T) -> Result<Self, CodecError> {
        Ok(Self::from_bytes(encode(value)?))
    }
}

impl<T: DeserializeOwned> Encoded<T> {
    /// Decodes the value (at most `limit` bytes reserved, see [`decode`]).
    pub fn decode(&self, limit: usize) -> Result<T, CodecError> {
        decode(&self.bytes, limit)
    }
}

impl<T> Encoded<T> {
    /// Wraps bytes claimed to encode a `T` (not checked until [`decode`](Self::decode)).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Encoded { bytes: bytes.into(), _type: PhantomData }
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the encoded bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (never true for a real value).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Encoded { bytes: Arc::clone(&self.bytes), _type: PhantomData }
    }
}

impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Encoded<T> {}

impl<T> fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<T> Serialize for Encoded<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

impl<'de, T> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl serde::de::Visitor<'_> for BytesVisitor {
            type Value = Arc<[u8]>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an encoded value as a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Arc::from(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(Arc::from(v))
            }
        }
        // `deserialize_bytes` borrows from the input slice: no allocation beyond the copy.
        d.deserialize_bytes(BytesVisitor).map(Encoded::from_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        n: u64,
        name: String,
        data: Vec<u8>,
        items: Vec<(u32, bool)>,
    }

    fn sample() -> Sample {
        Sample {
            n: 1 << 40,
            name: "cohort".into(),
            data: vec![7; 300],
            items: vec![(1, true), (9, false)],
        }
    }

    #[test]
    fn encoded_len_matches_encode() {
        let value = (7u64, "cohort".to_string(), vec![1u8; 300]);
        assert_eq!(encoded_len(&value).unwrap(), encode(&value).unwrap().len());
    }

    #[test]
    fn body_round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Sample>(&bytes, 4096).unwrap(), sample());
    }

    #[test]
    fn integers_are_varints() {
        assert_eq!(encode(&200u64).unwrap(), vec![200]);
        assert_eq!(encode(&300u64).unwrap(), vec![251, 0x2c, 0x01]);
    }

    #[test]
    fn frame_round_trip_through_decoder() {
        let mut dec = FrameDecoder::new(1024);
        let mut stream = Vec::new();
        for i in 0..3u64 {
            let mut s = sample();
            s.n = i;
            stream.extend(encode_frame(&s, 1024).unwrap());
        }
        // One byte at a time.
        let mut got = Vec::new();
        for b in &stream {
            dec.push(std::slice::from_ref(b));
            while let Some(body) = dec.next_frame().unwrap() {
                got.push(decode::<Sample>(&body, 1024).unwrap());
            }
        }
        assert_eq!(got.iter().map(|s| s.n).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn frame_header_is_big_endian_length() {
        let frame = encode_frame(&5u8, 16).unwrap();
        assert_eq!(frame, vec![0, 0, 0, 1, 5]);
        assert_eq!(read_frame_len([0, 0, 0, 1], 16), Ok(1));
    }

    #[test]
    fn oversize_frame_refused_after_header_only() {
        let mut dec = FrameDecoder::new(1000);
        dec.push(&1001u32.to_be_bytes());
        assert_eq!(dec.next_frame(), Err(CodecError::FrameTooLarge { len: 1001, max: 1000 }));
        // The error sticks: the stream cannot resynchronise.
        dec.push(&[0; 16]);
        assert!(dec.next_frame().is_err());
        // A maximal header is refused too, without allocating 4 GiB.
        let mut dec = FrameDecoder::new(1000);
        dec.push(&[0xff; 4]);
        assert!(matches!(dec.next_frame(), Err(CodecError::FrameTooLarge { .. })));
        assert!(read_frame_len([0xff; 4], u32::MAX - 1).is_err());
    }

    #[test]
    fn encoder_refuses_oversize_frame() {
        let s = sample();
        let body_len = encode(&s).unwrap().len();
        let max = u32::try_from(body_len).unwrap();
        assert!(encode_frame(&s, max).is_ok());
        assert_eq!(
            encode_frame(&s, max - 1),
            Err(CodecError::FrameTooLarge { len: body_len as u64, max: max - 1 })
        );
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let frame = encode_frame(&sample(), 4096).unwrap();
        let mut dec = FrameDecoder::new(4096);
        dec.push(&frame[..frame.len() - 1]);
        assert_eq!(dec.next_frame(), Ok(None));
        dec.push(&frame[frame.len() - 1..]);
        assert!(dec.next_frame().unwrap().is_some());
        assert_eq!(dec.next_frame(), Ok(None));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Sample>(&bytes[..cut], 4096).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&sample()).unwrap();
        let read = bytes.len();
        bytes.extend([0, 0]);
        assert_eq!(
            decode::<Sample>(&bytes, 4096),
            Err(CodecError::TrailingBytes { read, extra: 2 })
        );
    }

    #[test]
    fn input_longer_than_limit_is_refused() {
        let bytes = encode(&vec![0u8; 5000]).unwrap();
        assert!(matches!(decode::<Vec<u8>>(&bytes, 4096), Err(CodecError::BodyTooLarge { .. })));
        assert_eq!(decode::<Vec<u8>>(&bytes, 8192).unwrap().len(), 5000);
    }

    #[test]
    fn hostile_length_prefix_hits_the_limit() {
        // A string claiming u64::MAX / 2 bytes, then nothing.
        let mut bytes = vec![253];
        bytes.extend((u64::MAX / 2).to_le_bytes());
        assert_eq!(decode::<String>(&bytes, 4096), Err(CodecError::LimitExceeded { limit: 4096 }));
        // A byte string (as `ScriptBuf` reads it) claiming just over the limit.
        let mut bytes = vec![252];
        bytes.extend(5000u32.to_le_bytes());
        assert_eq!(
            decode::<bitcoin::ScriptBuf>(&bytes, 4096),
            Err(CodecError::LimitExceeded { limit: 4096 })
        );
        // A sequence is not claimed up front (serde caps its preallocation): it simply
        // runs out of input.
        assert!(matches!(decode::<Vec<u8>>(&bytes, 4096), Err(CodecError::Decode(_))));
    }

    #[test]
    fn short_body_cannot_reserve_the_whole_limit() {
        // Found by the to_coordinator fuzz target: 13 bytes (a Register whose first leaf's
        // cosigner claims 8,388,550 bytes) made the decoder allocate 8 MiB under the 8 MiB
        // frame limit before finding the input too short. Now the budget follows the input.
        let input = [1, 4, 0, 3, 0xfb, 0, 0, 0, 0xfc, 0xc6, 0xff, 0x7f, 0];
        let limit = crate::params::DEFAULT_MAX_FRAME as usize;
        assert_eq!(
            decode::<crate::messages::ToCoordinator>(&input, limit),
            Err(CodecError::LimitExceeded { limit: 4096 })
        );
        // A valid body of one-byte varints, each counted as 8 bytes, still fits its budget.
        let body = vec![5u64; 3000];
        let bytes = encode(&body).unwrap();
        assert_eq!(decode::<Vec<u64>>(&bytes, limit).unwrap(), body);
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = decode::<Sample>(&bytes, 4096);
            let mut dec = FrameDecoder::new(64);
            dec.push(&bytes);
            while let Ok(Some(_)) = dec.next_frame() {}
        }
    }

    #[test]
    fn encoded_is_a_byte_string_and_round_trips() {
        let enc = Encoded::new(&sample()).unwrap();
        let inner = encode(&sample()).unwrap();
        assert_eq!(enc.bytes(), &inner[..]);
        let outer = encode(&enc).unwrap();
        // Varint length then the bytes verbatim.
        assert_eq!(&outer[outer.len() - inner.len()..], &inner[..]);
        let back: Encoded<Sample> = decode(&outer, 4096).unwrap();
        assert_eq!(back, enc);
        assert_eq!(back.decode(4096).unwrap(), sample());
        let shared = enc.clone();
        assert_eq!(shared.len(), enc.len());
    }
}
