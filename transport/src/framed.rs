//! Length-framed, typed halves of a QUIC stream.

use std::marker::PhantomData;

use cohort_common::codec::{self, CodecError, FRAME_HEADER_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::TransportError;

/// The sending half of a stream, writing one frame per message.
#[derive(Debug)]
pub struct FramedSend<T> {
    stream: quinn::SendStream,
    max_frame: u32,
    _msg: PhantomData<fn(&T)>,
}

impl<T> FramedSend<T> {
    /// Wraps a stream; frames above `max_frame` are refused before sending.
    pub fn new(stream: quinn::SendStream, max_frame: u32) -> Self {
        FramedSend { stream, max_frame, _msg: PhantomData }
    }

    /// Writes an already encoded frame (header included) as is.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.stream.write_all(frame).await.map_err(write_error)
    }

    /// Finishes the stream (the peer's reader sees a clean end after the last frame).
    pub async fn finish(mut self) -> Result<(), TransportError> {
        self.stream.finish().map_err(|e| TransportError::Stream(e.to_string()))?;
        // Wait until the peer has everything, or gave up on the stream.
        match self.stream.stopped().await {
            Ok(_) => Ok(()),
            Err(quinn::StoppedError::ConnectionLost(e)) => Err(TransportError::from_connection(e)),
            Err(e) => Err(TransportError::Stream(e.to_string())),
        }
    }

    /// The same stream, sending another message type.
    pub fn retype<U>(self) -> FramedSend<U> {
        FramedSend { stream: self.stream, max_frame: self.max_frame, _msg: PhantomData }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }
}

impl<T: Serialize> FramedSend<T> {
    /// Encodes and writes one message.
    pub async fn send(&mut self, msg: &T) -> Result<(), TransportError> {
        let frame = codec::encode_frame(msg, self.max_frame).map_err(codec_error)?;
        self.send_frame(&frame).await
    }
}

/// The receiving half of a stream, reading one message per frame.
#[derive(Debug)]
pub struct FramedRecv<T> {
    stream: quinn::RecvStream,
    max_frame: u32,
    _msg: PhantomData<fn() -> T>,
}

impl<T> FramedRecv<T> {
    /// Wraps a stream; a frame header announcing more than `max_frame` is refused
    /// before any of the body is read.
    pub fn new(stream: quinn::RecvStream, max_frame: u32) -> Self {
        FramedRecv { stream, max_frame, _msg: PhantomData }
    }

    /// Reads the next frame's body: `None` when the stream ended cleanly between frames.
    pub async fn recv_body(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        // The first byte tells a clean end apart from a truncated header.
        match self.stream.read(&mut header[..1]).await.map_err(read_error)? {
            None => return Ok(None),
            Some(0) => return Err(TransportError::Stream("empty read".into())),
            Some(_) => {}
        }
        self.stream.read_exact(&mut header[1..]).await.map_err(read_exact_error)?;
        let len = codec::read_frame_len(header, self.max_frame).map_err(codec_error)?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.map_err(read_exact_error)?;
        Ok(Some(body))
    }

    /// Stops the stream (tells the peer we read no more).
    pub fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(quinn::VarInt::from_u32(code));
    }
}

impl<T: DeserializeOwned> FramedRecv<T> {
    /// Reads and decodes the next message: `None` when the stream ended cleanly.
    pub async fn recv(&mut self) -> Result<Option<T>, TransportError> {
        match self.recv_body().await? {
            None => Ok(None),
            Some(body) => {
                codec::decode(&body, self.max_frame as usize).map(Some).map_err(codec_error)
            }
        }
    }
}

fn codec_error(e: CodecError) -> TransportError {
    match e {
        CodecError::FrameTooLarge { len, max } => TransportError::FrameTooLarge { len, max },
        other => TransportError::Codec(other),
    }
}

fn write_error(e: quinn::WriteError) -> TransportError {
    match e {
        quinn::WriteError::ConnectionLost(c) => TransportError::from_connection(c),
        other => TransportError::Stream(format!("write failed: {other}")),
    }
}

fn read_error(e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::ConnectionLost(c) => TransportError::from_connection(c),
        other => TransportError::Stream(format!("read failed: {other}")),
    }
}

fn read_exact_error(e: quinn::ReadExactError) -> TransportError {
    match e {
        quinn::ReadExactError::ReadError(r) => read_error(r),
        quinn::ReadExactError::FinishedEarly(n) => {
            TransportError::Stream(format!("stream ended inside a frame ({n} bytes read)"))
        }
    }
}
