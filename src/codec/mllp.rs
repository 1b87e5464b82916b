//! The MLLP frame codec (HL7 Minimal Lower Layer Protocol, release 2).
//!
//! A frame is `0x0B payload 0x1C 0x0D`. The decoder:
//! - discards bytes that arrive outside a frame (before a start block) and counts them
//!   ([`MllpCodec::discarded_bytes`]); they are never returned or logged;
//! - yields a payload only once its end block and carriage return have arrived, so a
//!   connection that breaks mid-frame yields nothing ([`MllpError::IncompleteFrame`] at EOF);
//! - refuses a payload larger than the configured maximum as soon as that many bytes are
//!   buffered, so a sender cannot make it hold an unbounded frame;
//! - treats a start block inside a frame, or an end block not followed by a carriage return,
//!   as a broken stream.
//!
//! Every decoder error is fatal to the connection (tokio-util's `FramedRead` stops after one);
//! the caller closes it. The codec itself drops the broken frame's bytes and would resume at
//! the next start block. Errors name sizes and byte roles, never payload content.

use std::io;
use tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start block (VT).
pub const START_BLOCK: u8 = 0x0B;
/// End block (FS).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that must follow the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// Default maximum payload size: 1 MiB (an ORU from a drug-testing analyzer is a few KB).
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Why the MLLP stream could not be read or written. Names sizes and byte roles only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MllpError {
    /// The payload exceeds the configured maximum (the content is not kept).
    #[error("MLLP frame payload exceeds the maximum of {max} bytes")]
    FrameTooLarge { max: usize },
    /// An end block (0x1C) was followed by something other than a carriage return (0x0D).
    #[error("MLLP end block 0x1C not followed by carriage return 0x0D")]
    MissingCarriageReturn,
    /// A start block (0x0B) arrived inside a frame: the previous frame was cut off.
    #[error("MLLP start block 0x0B inside an unfinished frame")]
    UnexpectedStartBlock,
    /// The stream ended inside a frame; nothing of it is yielded. `received` counts the bytes
    /// after the start block.
    #[error("connection closed inside an MLLP frame after {received} bytes")]
    IncompleteFrame { received: usize },
    /// A payload to send contains a byte that would break framing (0x0B or 0x1C).
    #[error("payload to send contains an MLLP framing byte")]
    PayloadContainsFramingByte,
    /// The underlying transport failed.
    #[error("MLLP transport I/O error: {0:?}")]
    Io(io::ErrorKind),
}

impl From<io::Error> for MllpError {
    fn from(e: io::Error) -> Self {
        MllpError::Io(e.kind())
    }
}

impl From<MllpError> for io::Error {
    fn from(e: MllpError) -> Self {
        match e {
            MllpError::Io(kind) => io::Error::from(kind),
            MllpError::IncompleteFrame { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame: looking for a start block.
    Seeking,
    /// Inside a frame (the buffer starts with the start block); `scanned` payload bytes are
    /// known to hold neither an end block nor a start block.
    InFrame { scanned: usize },
}

/// MLLP framing for tokio-util's `Framed`/`FramedRead`/`FramedWrite`.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    discarded: u64,
    state: State,
}

impl Default for MllpCodec {
    fn default() -> Self {
        MllpCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl MllpCodec {
    /// A codec accepting payloads of at most `max_frame` bytes (framing bytes not counted).
    pub fn new(max_frame: usize) -> MllpCodec {
        MllpCodec {
            max_frame,
            discarded: 0,
            state: State::Seeking,
        }
    }

    /// The maximum payload size.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes discarded so far because they arrived outside a frame.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded
    }

    /// Returns the discarded-byte count and resets it (for periodic reporting).
    pub fn take_discarded_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.discarded)
    }

    /// Drops the broken frame's buffered bytes (not counted as discarded: the error reports
    /// them) and returns to looking for a start block.
    fn fail(&mut self, buf: &mut BytesMut, e: MllpError) -> MllpError {
        buf.clear();
        self.state = State::Seeking;
        e
    }

    fn discard(&mut self, buf: &mut BytesMut, n: usize) {
        buf.advance(n);
        self.discarded = self.discarded.saturating_add(n as u64);
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        loop {
            match self.state {
                State::Seeking => match buf.iter().position(|&b| b == START_BLOCK) {
                    Some(start) => {
                        self.discard(buf, start);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        let n = buf.len();
                        self.discard(buf, n);
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => {
                    // buf[0] is the start block; the payload begins at 1.
                    let payload = &buf[1..];
                    let found = payload[scanned..]
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK)
                        .map(|i| scanned + i);
                    match found {
                        None => {
                            if payload.len() > self.max_frame {
                                let max = self.max_frame;
                                return Err(self.fail(buf, MllpError::FrameTooLarge { max }));
                            }
                            self.state = State::InFrame {
                                scanned: payload.len(),
                            };
                            return Ok(None);
                        }
                        Some(i) if payload[i] == START_BLOCK => {
                            return Err(self.fail(buf, MllpError::UnexpectedStartBlock));
                        }
                        Some(end) => {
                            if end > self.max_frame {
                                let max = self.max_frame;
                                return Err(self.fail(buf, MllpError::FrameTooLarge { max }));
                            }
                            match payload.get(end + 1) {
                                None => {
                                    // End block seen; the carriage return has not arrived yet.
                                    self.state = State::InFrame { scanned: end };
                                    return Ok(None);
                                }
                                Some(&CARRIAGE_RETURN) => {
                                    buf.advance(1);
                                    let frame = buf.split_to(end).freeze();
                                    buf.advance(2);
                                    self.state = State::Seeking;
                                    return Ok(Some(frame));
                                }
                                Some(_) => {
                                    return Err(self.fail(buf, MllpError::MissingCarriageReturn));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match self.state {
            State::Seeking => Ok(None),
            State::InFrame { .. } => {
                let received = buf.len().saturating_sub(1);
                Err(self.fail(buf, MllpError::IncompleteFrame { received }))
            }
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, payload: T, dst: &mut BytesMut) -> Result<(), MllpError> {
        let payload = payload.as_ref();
        if payload.len() > self.max_frame {
            return Err(MllpError::FrameTooLarge {
                max: self.max_frame,
            });
        }
        if payload.iter().any(|&b| b == START_BLOCK || b == END_BLOCK) {
            return Err(MllpError::PayloadContainsFramingByte);
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_u8(END_BLOCK);
        dst.put_u8(CARRIAGE_RETURN);
        Ok(())
    }
}

/// Decodes every complete frame in `data` with a fresh codec of `max_frame`, then signals
/// end of stream. Returns the frames and the first error. This is the fuzzing entry point and
/// a convenience for tests; it never panics.
pub fn decode_all(data: &[u8], max_frame: usize) -> (Vec<Bytes>, Option<MllpError>) {
    let mut codec = MllpCodec::new(max_frame);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

/// Fuzzing entry point (`tests/fuzz`, target `mllp_decode`): decodes `data` with a small
/// maximum, checks every frame respects it and survives an encode/decode round trip, and that
/// the decoder never yields a partial frame.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    const MAX: usize = 256;
    let (frames, err) = decode_all(data, MAX);
    let mut wire = BytesMut::new();
    let mut codec = MllpCodec::new(MAX);
    for f in &frames {
        assert!(f.len() <= MAX);
        assert!(!f.contains(&START_BLOCK) && !f.contains(&END_BLOCK));
        codec
            .encode(f, &mut wire)
            .expect("a decoded frame re-encodes");
    }
    let (again, again_err) = decode_all(&wire, MAX);
    assert_eq!(again, frames);
    assert_eq!(again_err, None);
    if err.is_none() {
        // Every byte not in a yielded frame was discarded outside frames.
        let framed: usize = frames.iter().map(|f| f.len() + 3).sum();
        let mut c = MllpCodec::new(MAX);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = c.decode_eof(&mut buf) {}
        assert_eq!(c.discarded_bytes() as usize + framed, data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![START_BLOCK];
        v.extend_from_slice(payload);
        v.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        v
    }

    const MSG: &[u8] = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rPID|1\r";

    #[test]
    fn single_frame() {
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::from(&frame(MSG)[..]);
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(MSG));
        assert!(buf.is_empty());
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(c.discarded_bytes(), 0);
    }

    #[test]
    fn split_reads_byte_by_byte() {
        let wire = [frame(MSG), frame(b"second")].concat();
        let mut c = MllpCodec::new(64);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in &wire {
            buf.put_u8(b);
            while let Some(f) = c.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            vec![Bytes::from_static(MSG), Bytes::from_static(b"second")]
        );
        assert!(buf.is_empty());
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn nothing_yielded_until_carriage_return() {
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u8(START_BLOCK);
        buf.put_slice(b"abc");
        buf.put_u8(END_BLOCK);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.put_u8(CARRIAGE_RETURN);
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn multiple_frames_in_one_buffer() {
        let wire = [frame(b"one"), frame(b"two"), frame(b"three")].concat();
        let (frames, err) = decode_all(&wire, 16);
        assert_eq!(err, None);
        assert_eq!(frames, vec![&b"one"[..], &b"two"[..], &b"three"[..]]);
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let (frames, err) = decode_all(&frame(b""), 16);
        assert_eq!(err, None);
        assert_eq!(frames, vec![Bytes::new()]);
    }

    #[test]
    fn garbage_before_start_is_discarded_and_counted() {
        let wire = [&b"noise\r\n"[..], &frame(b"one"), b"xy", &frame(b"two")].concat();
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(c.discarded_bytes(), 7);
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(c.discarded_bytes(), 9);
        assert_eq!(c.take_discarded_bytes(), 9);
        assert_eq!(c.discarded_bytes(), 0);
    }

    #[test]
    fn garbage_only_yields_nothing_and_is_counted() {
        let mut c = MllpCodec::default();
        let mut buf = BytesMut::from(&b"\x1c\r garbage"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
        assert_eq!(c.discarded_bytes(), 10);
    }

    #[test]
    fn size_limit_at_below_and_above() {
        for (len, ok) in [(7usize, true), (8, true), (9, false)] {
            let payload = vec![b'x'; len];
            let (frames, err) = decode_all(&frame(&payload), 8);
            if ok {
                assert_eq!(err, None, "len {len}");
                assert_eq!(frames.len(), 1);
                assert_eq!(frames[0].len(), len);
            } else {
                assert_eq!(err, Some(MllpError::FrameTooLarge { max: 8 }), "len {len}");
                assert!(frames.is_empty());
            }
        }
    }

    #[test]
    fn oversize_detected_before_end_arrives() {
        let mut c = MllpCodec::new(8);
        let mut buf = BytesMut::new();
        buf.put_u8(START_BLOCK);
        buf.put_slice(&[b'x'; 8]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            None,
            "exactly at the limit: wait"
        );
        buf.put_u8(b'x');
        assert_eq!(
            c.decode(&mut buf),
            Err(MllpError::FrameTooLarge { max: 8 }),
            "one over the limit without an end block"
        );
    }

    #[test]
    fn oversize_error_does_not_echo_content() {
        let payload = vec![b'Z'; 100];
        let (_, err) = decode_all(&frame(&payload), 10);
        let text = err.unwrap().to_string();
        assert!(!text.contains('Z'));
        assert!(text.contains("10"));
    }

    #[test]
    fn missing_carriage_return_after_end_block() {
        let wire = [START_BLOCK, b'a', END_BLOCK, b'\n'];
        let (frames, err) = decode_all(&wire, 16);
        assert!(frames.is_empty());
        assert_eq!(err, Some(MllpError::MissingCarriageReturn));
    }

    #[test]
    fn start_block_inside_frame_is_an_error() {
        let wire = [&[START_BLOCK][..], b"abc", &frame(b"def")].concat();
        let (frames, err) = decode_all(&wire, 16);
        assert!(frames.is_empty());
        assert_eq!(err, Some(MllpError::UnexpectedStartBlock));
    }

    #[test]
    fn broken_connection_mid_frame_yields_nothing() {
        for cut in 1..frame(MSG).len() {
            let wire = &frame(MSG)[..cut];
            let (frames, err) = decode_all(wire, 1024);
            assert!(frames.is_empty(), "cut {cut}");
            assert_eq!(
                err,
                Some(MllpError::IncompleteFrame {
                    received: (cut - 1).min(MSG.len() + 1)
                }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn eof_after_complete_frame_then_partial() {
        let wire = [&frame(b"ok")[..], &[START_BLOCK], b"part"].concat();
        let (frames, err) = decode_all(&wire, 16);
        assert_eq!(frames, vec![&b"ok"[..]]);
        assert_eq!(err, Some(MllpError::IncompleteFrame { received: 4 }));
    }

    #[test]
    fn encoder_wraps_payload() {
        let mut c = MllpCodec::default();
        let mut dst = BytesMut::new();
        c.encode(MSG, &mut dst).unwrap();
        assert_eq!(&dst[..], &frame(MSG)[..]);
        let (frames, err) = decode_all(&dst, DEFAULT_MAX_FRAME);
        assert_eq!(err, None);
        assert_eq!(frames, vec![MSG]);
    }

    #[test]
    fn encoder_limits_and_framing_bytes() {
        let mut c = MllpCodec::new(4);
        let mut dst = BytesMut::new();
        assert_eq!(c.encode(&b"abcd"[..], &mut dst), Ok(()));
        assert_eq!(
            c.encode(&b"abcde"[..], &mut dst),
            Err(MllpError::FrameTooLarge { max: 4 })
        );
        assert_eq!(
            c.encode(&b"a\x1cb"[..], &mut dst),
            Err(MllpError::PayloadContainsFramingByte)
        );
        assert_eq!(
            c.encode(&b"a\x0bb"[..], &mut dst),
            Err(MllpError::PayloadContainsFramingByte)
        );
        assert_eq!(&dst[..], &frame(b"abcd")[..]);
    }

    #[test]
    fn io_error_conversions() {
        let e: MllpError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        assert_eq!(e, MllpError::Io(io::ErrorKind::ConnectionReset));
        let back: io::Error = MllpError::IncompleteFrame { received: 3 }.into();
        assert_eq!(back.kind(), io::ErrorKind::UnexpectedEof);
        let back: io::Error = MllpError::FrameTooLarge { max: 3 }.into();
        assert_eq!(back.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn decodes_from_a_chunked_stream() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = tokio::io::duplex(8);
        let wire = [frame(b"first"), frame(MSG)].concat();
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(3) {
                client.write_all(chunk).await.unwrap();
            }
            client.write_all(&[START_BLOCK, b'x']).await.unwrap();
        });
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let last_err = loop {
            if server.read_buf(&mut buf).await.unwrap() == 0 {
                match codec.decode_eof(&mut buf) {
                    Ok(Some(f)) => got.push(f),
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
                continue;
            }
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        };
        writer.await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"first"), Bytes::from_static(MSG)]
        );
        assert_eq!(last_err, Some(MllpError::IncompleteFrame { received: 1 }));
    }

    #[test]
    fn after_an_error_the_codec_resumes_at_the_next_start_block() {
        let mut c = MllpCodec::new(16);
        let mut buf = BytesMut::from(&[START_BLOCK, b'a', END_BLOCK, b'x'][..]);
        assert_eq!(c.decode(&mut buf), Err(MllpError::MissingCarriageReturn));
        assert!(buf.is_empty());
        buf.put_slice(&frame(b"next"));
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"next"[..]));
    }
}
