//! Framing: the 12-byte header, frame kinds, encoding and a decoder.
//!
//! A frame is a fixed header followed by `len` payload bytes:
//!
//! ```text
//! offset size field
//!      0    4 len       payload length, u32 little endian, <= MAX_FRAME_PAYLOAD
//!      4    1 kind      Kind
//!      5    1 flags     must be 0
//!      6    2 reserved  must be 0
//!      8    4 id        u32 little endian: request id, stream id, or 0
//! ```
//!
//! Decoding is pure: [`decode`] and [`Decoder`] work on byte buffers, return
//! typed errors and never panic, whatever the input. A decoding error means
//! the byte stream cannot be trusted any more (there is no resynchronisation);
//! the connection must be closed. This module does no I/O; see
//! [`crate::io`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::message::{ErrorBody, Event, Hello, Request, Response, WireResult, WireResultRef};

/// Size of the frame header.
pub const HEADER_LEN: usize = 12;

/// Largest payload a frame may carry (1 MiB). Larger requests are refused by
/// the encoder and, from a peer, by the decoder before any payload is
/// buffered, which bounds a receiver's memory per connection.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;

/// What a frame carries. Every byte value on the wire maps either to a
/// variant or to [`DecodeError::UnknownKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Version handshake (id 0, JSON [`Hello`]).
    Hello = 1,
    /// A request (id = request id, JSON [`Request`]).
    Request = 2,
    /// The answer to a request (id = the request's id, JSON result).
    Response = 3,
    /// Stream bytes (id = stream id, raw non-empty payload).
    Data = 4,
    /// End of a stream from the sender's side (id = stream id, no payload).
    Close = 5,
    /// Flow-control credit (id = stream id, u32 LE byte count > 0).
    Credit = 6,
    /// Unsolicited notice (id 0, JSON [`Event`]).
    Event = 7,
    /// Connection-level error, after which the sender closes (id 0, JSON
    /// [`ErrorBody`]). Used to refuse a `Hello`.
    Error = 8,
}

impl Kind {
    /// Whether frames of this kind belong to the connection (id 0) rather
    /// than to a request or stream (id non-zero).
    pub fn is_connection_level(self) -> bool {
        matches!(self, Kind::Hello | Kind::Event | Kind::Error)
    }
}

impl TryFrom<u8> for Kind {
    type Error = DecodeError;

    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Data,
            5 => Kind::Close,
            6 => Kind::Credit,
            7 => Kind::Event,
            8 => Kind::Error,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// Why bytes from the peer are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The header announces a payload larger than allowed.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The kind byte names no known kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The reserved header field is not zero.
    #[error("reserved header field is not zero")]
    BadReserved,
    /// The flags byte is not zero.
    #[error("unknown frame flags {0:#04x}")]
    BadFlags(u8),
    /// The id does not fit the kind: connection-level kinds need id 0,
    /// request and stream kinds a non-zero id.
    #[error("id {id} is not valid for a {kind:?} frame")]
    BadId {
        /// Frame kind.
        kind: Kind,
        /// The offending id.
        id: u32,
    },
    /// The payload does not parse for its kind.
    #[error("bad {kind:?} payload: {reason}")]
    BadPayload {
        /// Frame kind.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
}

/// Why a frame cannot be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The payload would exceed [`MAX_FRAME_PAYLOAD`].
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame breaks a rule the decoder enforces (empty `Data`, zero
    /// `Credit`, an id that does not fit the kind).
    #[error("invalid frame: {0}")]
    Invalid(DecodeError),
    /// JSON serialisation failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length (checked against [`MAX_FRAME_PAYLOAD`]).
    pub len: u32,
    /// Frame kind.
    pub kind: Kind,
    /// Request id, stream id, or 0.
    pub id: u32,
}

impl Header {
    /// Parses and checks a header: kind, flags, reserved bits, payload
    /// length and whether the id fits the kind.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let kind = Kind::try_from(b[4])?;
        if b[5] != 0 {
            return Err(DecodeError::BadFlags(b[5]));
        }
        if b[6] != 0 || b[7] != 0 {
            return Err(DecodeError::BadReserved);
        }
        let id = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if len as usize > MAX_FRAME_PAYLOAD {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: MAX_FRAME_PAYLOAD,
            });
        }
        if kind.is_connection_level() != (id == 0) {
            return Err(DecodeError::BadId { kind, id });
        }
        Ok(Header { len, kind, id })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = self.kind as u8;
        b[8..12].copy_from_slice(&self.id.to_le_bytes());
        b
    }
}

/// One protocol frame with its payload parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Version handshake.
    Hello(Hello),
    /// A request.
    Request {
        /// Request id, chosen by the sender, non-zero.
        id: u32,
        /// The request.
        request: Request,
    },
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: u32,
        /// The answer.
        result: Result<Response, ErrorBody>,
    },
    /// Bytes on a stream.
    Data {
        /// Stream id, non-zero.
        stream: u32,
        /// The bytes; never empty.
        data: Bytes,
    },
    /// End of a stream from the sender's side. Sent by a stream's receiver
    /// it means "stop sending, I will not read any more".
    Close {
        /// Stream id, non-zero.
        stream: u32,
    },
    /// Permission for the peer to send `bytes` more bytes on `stream`.
    Credit {
        /// Stream id, non-zero.
        stream: u32,
        /// Bytes granted, non-zero.
        bytes: u32,
    },
    /// An unsolicited notice.
    Event(Event),
    /// A connection-level error; the sender closes after it.
    Error(ErrorBody),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::Request { .. } => Kind::Request,
            Frame::Response { .. } => Kind::Response,
            Frame::Data { .. } => Kind::Data,
            Frame::Close { .. } => Kind::Close,
            Frame::Credit { .. } => Kind::Credit,
            Frame::Event(_) => Kind::Event,
            Frame::Error(_) => Kind::Error,
        }
    }

    /// The header id: request id, stream id, or 0.
    pub fn id(&self) -> u32 {
        match self {
            Frame::Hello(_) | Frame::Event(_) | Frame::Error(_) => 0,
            Frame::Request { id, .. } | Frame::Response { id, .. } => *id,
            Frame::Data { stream, .. } | Frame::Close { stream } | Frame::Credit { stream, .. } => {
                *stream
            }
        }
    }

    /// Appends the frame's wire bytes to `buf`. Nothing is written on error.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        let kind = self.kind();
        let id = self.id();
        if kind.is_connection_level() != (id == 0) {
            return Err(EncodeError::Invalid(DecodeError::BadId { kind, id }));
        }
        let owned: Vec<u8>;
        let payload: &[u8] = match self {
            Frame::Hello(h) => {
                owned = serde_json::to_vec(h)?;
                &owned
            }
            Frame::Request { request, .. } => {
                owned = serde_json::to_vec(request)?;
                &owned
            }
            Frame::Response { result, .. } => {
                owned = serde_json::to_vec(&WireResultRef::from(result))?;
                &owned
            }
            Frame::Event(e) => {
                owned = serde_json::to_vec(e)?;
                &owned
            }
            Frame::Error(e) => {
                owned = serde_json::to_vec(e)?;
                &owned
            }
            Frame::Data { data, .. } => {
                if data.is_empty() {
                    return Err(EncodeError::Invalid(bad(kind, "empty Data frame")));
                }
                data
            }
            Frame::Close { .. } => &[],
            Frame::Credit { bytes, .. } => {
                if *bytes == 0 {
                    return Err(EncodeError::Invalid(bad(kind, "zero credit")));
                }
                owned = bytes.to_le_bytes().to_vec();
                &owned
            }
        };
        if payload.len() > MAX_FRAME_PAYLOAD {
            return Err(EncodeError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_FRAME_PAYLOAD,
            });
        }
        let header = Header {
            // Cannot truncate: checked against MAX_FRAME_PAYLOAD above.
            len: payload.len() as u32,
            kind,
            id,
        };
        buf.put_slice(&header.to_bytes());
        buf.put_slice(payload);
        Ok(())
    }

    /// The frame's wire bytes in a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Builds a frame from a checked header and its payload (exactly
    /// `header.len` bytes; a length mismatch is a `BadPayload` error).
    pub fn from_parts(header: &Header, payload: Bytes) -> Result<Frame, DecodeError> {
        let kind = header.kind;
        let id = header.id;
        if payload.len() != header.len as usize {
            return Err(bad(kind, "payload length does not match header"));
        }
        Ok(match kind {
            Kind::Hello => Frame::Hello(from_json(kind, &payload)?),
            Kind::Request => Frame::Request {
                id,
                request: from_json(kind, &payload)?,
            },
            Kind::Response => Frame::Response {
                id,
                result: from_json::<WireResult>(kind, &payload)?.into(),
            },
            Kind::Data => {
                if payload.is_empty() {
                    return Err(bad(kind, "empty Data frame"));
                }
                Frame::Data {
                    stream: id,
                    data: payload,
                }
            }
            Kind::Close => {
                if !payload.is_empty() {
                    return Err(bad(kind, "Close frame with a payload"));
                }
                Frame::Close { stream: id }
            }
            Kind::Credit => {
                let b: [u8; 4] = payload[..]
                    .try_into()
                    .map_err(|_| bad(kind, "credit payload is not 4 bytes"))?;
                let bytes = u32::from_le_bytes(b);
                if bytes == 0 {
                    return Err(bad(kind, "zero credit"));
                }
                Frame::Credit { stream: id, bytes }
            }
            Kind::Event => Frame::Event(from_json(kind, &payload)?),
            Kind::Error => Frame::Error(from_json(kind, &payload)?),
        })
    }
}

fn bad(kind: Kind, reason: &str) -> DecodeError {
    DecodeError::BadPayload {
        kind,
        reason: reason.to_string(),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::BadPayload {
        kind,
        reason: e.to_string(),
    })
}

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(None)` if `buf` holds only part of a frame (nothing is wrong
/// yet), or the frame and the number of bytes it used. A header error is
/// reported as soon as the 12 header bytes are present, before the payload
/// arrives.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some(hdr) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::parse(hdr)?;
    let total = HEADER_LEN + header.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let frame = Frame::from_parts(&header, Bytes::copy_from_slice(payload))?;
    Ok(Some((frame, total)))
}

/// An incremental decoder: feed it bytes as they arrive, take frames out.
///
/// Once it has returned an error it returns the same error forever: a
/// framing error leaves no way to find the next frame boundary.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// Buffered memory stays bounded by one header, one maximal payload and
    /// whatever was fed since the last call: an oversized header is refused
    /// before its payload is waited for.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.try_next() {
            Ok(f) => Ok(f),
            Err(e) => {
                self.buf = BytesMut::new();
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn try_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        let Some(hdr) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(hdr)?;
        let total = HEADER_LEN + header.len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(header.len as usize).freeze();
        Frame::from_parts(&header, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ErrorCode, ExitStatus};

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello::new(Some("test".into()))),
            Frame::Request {
                id: 7,
                request: Request::Stats {
                    container_id: "c".into(),
                },
            },
            Frame::Response {
                id: 7,
                result: Ok(Response::Exited(ExitStatus {
                    code: Some(1),
                    signal: None,
                    oom_killed: false,
                })),
            },
            Frame::Response {
                id: 8,
                result: Err(ErrorBody::new(ErrorCode::NotFound, "nope")),
            },
            Frame::Data {
                stream: 3,
                data: Bytes::from_static(b"\x00\xffbinary\n"),
            },
            Frame::Close { stream: 3 },
            Frame::Credit {
                stream: 3,
                bytes: 65536,
            },
            Frame::Event(Event::Oom {
                container_id: "c".into(),
            }),
            Frame::Error(ErrorBody::new(ErrorCode::UnsupportedVersion, "v")),
        ]
    }

    fn header(len: u32, kind: u8, flags: u8, reserved: u16, id: u32) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.push(kind);
        v.push(flags);
        v.extend_from_slice(&reserved.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
        v
    }

    #[test]
    fn every_kind_round_trips() {
        for f in samples() {
            let bytes = f.to_vec().unwrap();
            let (back, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(back, f);
        }
    }

    #[test]
    fn header_layout_is_as_documented() {
        let f = Frame::Credit {
            stream: 0x0102_0304,
            bytes: 5,
        };
        let b = f.to_vec().unwrap();
        assert_eq!(b, [4, 0, 0, 0, 6, 0, 0, 0, 4, 3, 2, 1, 5, 0, 0, 0]);
    }

    #[test]
    fn truncated_input_waits_for_more() {
        let bytes = samples()[1].to_vec().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn decoder_handles_byte_at_a_time_and_batches() {
        let mut all = Vec::new();
        for f in samples() {
            f.encode(&mut all).unwrap();
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &all {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, samples());
        assert_eq!(d.buffered(), 0);

        let mut d = Decoder::new();
        d.feed(&all);
        let mut got = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got, samples());
    }

    #[test]
    fn oversized_frame_is_refused_from_the_header_alone() {
        let h = header(MAX_FRAME_PAYLOAD as u32 + 1, 4, 0, 0, 1);
        let err = decode(&h).unwrap_err();
        assert_eq!(
            err,
            DecodeError::FrameTooLarge {
                len: MAX_FRAME_PAYLOAD as u32 + 1,
                max: MAX_FRAME_PAYLOAD
            }
        );
        let mut d = Decoder::new();
        d.feed(&header(u32::MAX, 4, 0, 0, 1));
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        // Poisoned: the error sticks and nothing more is buffered.
        d.feed(&[0; 100]);
        assert!(d.next_frame().is_err());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would() {
        let big = Frame::Data {
            stream: 1,
            data: Bytes::from(vec![0; MAX_FRAME_PAYLOAD + 1]),
        };
        assert!(matches!(
            big.to_vec(),
            Err(EncodeError::PayloadTooLarge { .. })
        ));
        let max = Frame::Data {
            stream: 1,
            data: Bytes::from(vec![0; MAX_FRAME_PAYLOAD]),
        };
        assert_eq!(max.to_vec().unwrap().len(), HEADER_LEN + MAX_FRAME_PAYLOAD);
        for f in [
            Frame::Data {
                stream: 1,
                data: Bytes::new(),
            },
            Frame::Data {
                stream: 0,
                data: Bytes::from_static(b"x"),
            },
            Frame::Credit {
                stream: 1,
                bytes: 0,
            },
            Frame::Close { stream: 0 },
            Frame::Request {
                id: 0,
                request: Request::Shutdown,
            },
        ] {
            let mut v = Vec::new();
            assert!(matches!(f.encode(&mut v), Err(EncodeError::Invalid(_))));
            assert!(v.is_empty());
        }
    }

    #[test]
    fn garbage_headers_get_typed_errors() {
        assert_eq!(
            decode(&header(0, 0, 0, 0, 0)),
            Err(DecodeError::UnknownKind(0))
        );
        assert_eq!(
            decode(&header(0, 200, 0, 0, 0)),
            Err(DecodeError::UnknownKind(200))
        );
        assert_eq!(
            decode(&header(0, 5, 0, 1, 1)),
            Err(DecodeError::BadReserved)
        );
        assert_eq!(
            decode(&header(0, 5, 0x80, 0, 1)),
            Err(DecodeError::BadFlags(0x80))
        );
        assert_eq!(
            decode(&header(0, 5, 0, 0, 0)),
            Err(DecodeError::BadId {
                kind: Kind::Close,
                id: 0
            })
        );
        assert_eq!(
            decode(&header(2, 1, 0, 0, 9)),
            Err(DecodeError::BadId {
                kind: Kind::Hello,
                id: 9
            })
        );
    }

    #[test]
    fn garbage_payloads_get_typed_errors() {
        let cases: Vec<(u8, u32, &[u8])> = vec![
            (1, 0, b"{"),
            (1, 0, b"{\"version\":1}"),
            (2, 1, b"[]"),
            (2, 1, b"{\"type\":\"exec\"}"),
            (3, 1, b"{\"Ok\":{\"type\":\"done\"}}"),
            (4, 1, b""),
            (5, 1, b"x"),
            (6, 1, b"\x01\x00\x00"),
            (6, 1, b"\x00\x00\x00\x00"),
            (7, 0, b"\xff\xfe"),
            (8, 0, b"null"),
        ];
        for (kind, id, payload) in cases {
            let mut b = header(payload.len() as u32, kind, 0, 0, id);
            b.extend_from_slice(payload);
            match decode(&b) {
                Err(DecodeError::BadPayload { kind: k, .. }) => assert_eq!(k as u8, kind),
                other => panic!("kind {kind} payload {payload:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn pseudo_random_garbage_never_panics() {
        // A cheap xorshift so the test needs no dependency; the fuzz target
        // does the thorough job.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            let n = (x % 64) as usize;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            // Bias towards plausible headers so payload parsing is reached.
            if buf.len() >= HEADER_LEN {
                let len = (buf.len() - HEADER_LEN) as u32;
                buf[0..4].copy_from_slice(&len.to_le_bytes());
                buf[4] %= 9;
                buf[5] = 0;
                buf[6] = 0;
                buf[7] = 0;
            }
            let _ = decode(&buf);
            let mut d = Decoder::new();
            d.feed(&buf);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
