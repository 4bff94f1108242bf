//! The wire protocol between Cocoon's host runtime and the guest agent.
//!
//! Both sides link this crate, so the frame layout, the message types and the
//! flow-control rules exist once. The transport is a byte stream (a vsock
//! connection, reached from the host through the VMM's hybrid vsock Unix
//! socket); this crate does not open connections.
//!
//! - [`frame`]: the 12-byte header, [`Frame`], encoding and a pure
//!   [`Decoder`] that never panics on hostile input.
//! - [`message`]: the JSON payloads: [`Hello`], [`Request`], [`Response`],
//!   [`ErrorBody`], [`Event`].
//! - [`flow`]: per-stream credit accounting ([`SendWindow`], [`RecvWindow`]).
//! - [`io`]: read/write a whole frame on `std::io` streams, and on tokio
//!   streams with the `tokio` feature.
//!
//! `docs/protocol.md` describes the conversation (handshake, requests,
//! streams, credit) and why the format looks the way it does.
//!
//! ```
//! use cocoon_proto::{Decoder, Frame, Request};
//!
//! let bytes = Frame::Request { id: 1, request: Request::Shutdown }.to_vec()?;
//! let mut decoder = Decoder::new();
//! decoder.feed(&bytes[..5]);
//! assert_eq!(decoder.next_frame()?, None); // waits for the rest
//! decoder.feed(&bytes[5..]);
//! assert!(matches!(decoder.next_frame()?, Some(Frame::Request { id: 1, .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod flow;
pub mod frame;
pub mod io;
pub mod message;

pub use flow::{FlowError, RecvWindow, SendWindow, CREDIT_BATCH, INITIAL_WINDOW};
pub use frame::{
    decode, DecodeError, Decoder, EncodeError, Frame, Header, Kind, HEADER_LEN, MAX_FRAME_PAYLOAD,
};
pub use io::{read_frame, write_frame, WireError};
#[cfg(feature = "tokio")]
pub use io::{read_frame_async, write_frame_async};
pub use message::{
    negotiate_version, ConsoleSize, ErrorBody, ErrorCode, Event, ExitStatus, FileKind, Hello,
    PathInfo, Process, Request, Response, Rlimit, Rootfs, Stats, User, KEPT_OUTPUT,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
