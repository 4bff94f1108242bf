//! The host side of the host ↔ agent protocol: an async client for the
//! guest agent of one sandbox.
//!
//! [`AgentClient::connect`] reaches the agent through the VMM's hybrid vsock
//! Unix socket, does the version handshake and starts two background tasks:
//! one writes queued frames, the other reads frames and hands them to the
//! request or stream they belong to. Requests may overlap freely; stdio and
//! file copies are streams with per-stream credit, so a slow consumer makes
//! the agent wait instead of growing memory here.
//!
//! Nothing here hangs forever on a dead agent: losing the connection fails
//! every outstanding call and stream with [`Error::Disconnected`], requests
//! have a timeout, and the calls without one (`wait`, stream reads and
//! writes) are cancelled by dropping their future.
//!
//! This module knows nothing of VMs or sandboxes: it is given a socket path
//! (or any byte stream, in tests) and speaks [`cocoon_proto`] over it.

mod client;
mod error;
mod stream;

pub use client::{AgentClient, ContainerSetup, ExecHandle, Stdio, DEFAULT_REQUEST_TIMEOUT};
pub use error::Error;
pub use stream::{InputStream, OutputStream, CHUNK};

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
