//! The fuzz targets' bodies and what they share, in the workspace so that CI builds,
//! lints and runs them (`tests/replay.rs`); the cargo-fuzz crate in `fuzz/` wraps each in
//! a libFuzzer binary.
//!
//! # Layout
//!
//! - [`targets`]: one module per target, each a `run(&[u8])`, and the list of them.
//! - [`heap`]: an allocator that counts live bytes per thread, so a target can assert that
//!   a decoder stayed within its size limit.
//! - [`check_codec`]: decode → encode → decode for any message type, with the limit checks.
//! - [`scratch_file`]: where the store targets keep their one SQLite file per process.
//! - [`damage`], [`samples`]: what the store targets write into their files, and the real
//!   values (keys, nonces, signatures, transactions) the seeds are made of.
//!
//! Panics here are the point: a fuzz target reports a broken property by panicking.

use std::fmt::Debug;
use std::path::PathBuf;

use cohort_common::codec::{self, CodecError, FrameDecoder};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod damage;
pub mod heap;
pub mod samples;
pub mod targets;

/// The decode limit the message targets use: the transport's default frame limit, which is
/// what `transport::server` and `transport::framed` pass to [`codec::decode`].
pub const DECODE_LIMIT: usize = cohort_common::params::DEFAULT_MAX_FRAME as usize;

/// Decodes `data` as a `T` the way a peer's frame body is decoded and checks what must hold.
///
/// - Decoding never holds more than [`DECODE_LIMIT`] bytes of heap at once, whatever `data`
///   claims (measured with [`heap::peak_during`]).
/// - A value that decodes re-encodes, the re-encoding decodes to the same value, its length
///   is what [`codec::encoded_len`] says, and encoding is then a fixed point.
/// - The same body sent as a frame comes out of a [`FrameDecoder`] unchanged.
///
/// Returns the value, so a target can check more of it.
pub fn check_codec<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let (decoded, peak) = heap::peak_during(|| codec::decode::<T>(data, DECODE_LIMIT));
    assert!(
        peak <= DECODE_LIMIT,
        "decoding {} input bytes held {peak} bytes of heap, above the limit of {DECODE_LIMIT}",
        data.len()
    );
    let value = match decoded {
        Ok(value) => value,
        Err(CodecError::FrameTooLarge { .. } | CodecError::Encode(_)) => {
            panic!("decode returned an error only encoding or framing may return")
        }
        Err(_) => return None,
    };

    let bytes = codec::encode(&value).expect("a decoded value encodes");
    assert_eq!(codec::encoded_len(&value), Ok(bytes.len()), "encoded_len disagrees with encode");
    let again: T = codec::decode(&bytes, DECODE_LIMIT).expect("a re-encoded value decodes");
    assert_eq!(again, value, "decode -> encode -> decode changed the value");
    assert_eq!(codec::encode(&again).as_deref(), Ok(&bytes[..]), "encoding is not a fixed point");

    let max_frame = u32::try_from(bytes.len()).expect("fuzz inputs are far below 4 GiB");
    let frame = codec::encode_frame(&value, max_frame).expect("a body of max_frame bytes frames");
    let mut frames = FrameDecoder::new(max_frame);
    frames.push(&frame);
    assert_eq!(frames.next_frame(), Ok(Some(bytes)), "the framed body came back different");
    assert_eq!(frames.buffered(), 0, "bytes left after the only frame");
    Some(value)
}

/// A file for this process's SQLite store: under `/dev/shm` when it exists (SQLite's
/// fsyncs are free there), else the system temp directory. The directory is removed and
/// made anew, so a file from an earlier run of the same process id is never reused.
pub fn scratch_file(target: &str) -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
    let dir = base.join(format!("cohort-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the scratch directory");
    dir.join("store.sqlite")
}
