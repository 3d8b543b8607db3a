//! Fuzzes the frame layer: [`read_frame_len`] on a 4-byte header and [`FrameDecoder`] on a
//! byte stream arriving in pieces, both with a fuzzed `max_frame`.
//!
//! Input layout: 4 bytes of `max_frame` (big-endian; missing bytes are zero), then the
//! stream; the stream's first 4 bytes are also the header given to `read_frame_len`.
//! Each stream byte below 8 also cuts the stream there, to vary how it arrives.
//!
//! Asserts: `read_frame_len` returns the header's value exactly when it is at most
//! `max_frame` and refuses it otherwise; the decoder never returns a body above
//! `max_frame`, never sits on a whole frame without returning it, and the
//! frames it returns, framed again, are exactly the bytes it consumed; once it reports an
//! error it keeps reporting it.

use cohort_common::codec::{read_frame_len, CodecError, FrameDecoder, FRAME_HEADER_LEN};

/// Runs one input.
pub fn run(data: &[u8]) {
    let (max_bytes, stream) = data.split_at(data.len().min(4));
    let mut max = [0u8; 4];
    max[..max_bytes.len()].copy_from_slice(max_bytes);
    let max_frame = u32::from_be_bytes(max);

    if let Some(header) = stream.first_chunk::<FRAME_HEADER_LEN>() {
        let announced = u32::from_be_bytes(*header);
        match read_frame_len(*header, max_frame) {
            Ok(len) => {
                assert!(announced <= max_frame);
                assert_eq!(u32::try_from(len), Ok(announced));
            }
            Err(CodecError::FrameTooLarge { len, max }) => {
                assert!(announced > max_frame);
                assert_eq!((len, max), (u64::from(announced), max_frame));
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    let mut decoder = FrameDecoder::new(max_frame);
    let mut consumed = Vec::new();
    let mut failed = false;
    for piece in stream.split_inclusive(|b| *b < 8) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max_frame as usize, "a body above max_frame");
                    consumed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    consumed.extend_from_slice(&body);
                }
                Ok(None) => break,
                Err(CodecError::FrameTooLarge { .. }) => {
                    // The stream cannot resynchronise: the error sticks, even with more bytes.
                    decoder.push(piece);
                    assert!(decoder.next_frame().is_err(), "the error went away");
                    failed = true;
                    break;
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        if failed {
            break;
        }
        let one_frame = FRAME_HEADER_LEN + max_frame as usize;
        assert!(decoder.buffered() < one_frame, "buffered a whole frame without returning it");
    }
    assert!(stream.starts_with(&consumed), "returned frames are not the stream's prefix");
    if !failed {
        assert_eq!(decoder.buffered(), stream.len() - consumed.len());
    }
}
