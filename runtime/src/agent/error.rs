//! Errors of the agent client.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cocoon_proto::ErrorBody;
use thiserror::Error;

/// Why a call to the agent failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The vsock Unix socket could not be connected.
    #[error("cannot connect to the vsock socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// The VMM did not accept `CONNECT <port>` (no listener in the guest,
    /// or not a hybrid vsock socket).
    #[error("vsock CONNECT to port {port} was not accepted (reply {reply:?})")]
    VsockRefused {
        /// Guest port.
        port: u32,
        /// What came back instead of `OK <port>` (empty if the socket closed).
        reply: String,
    },
    /// An operation took longer than allowed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The agent did not complete the version handshake.
    #[error("agent handshake failed: {0}")]
    Handshake(String),
    /// The agent and this host share no protocol version.
    #[error("agent speaks no protocol version we do: {0}")]
    UnsupportedVersion(String),
    /// The connection to the agent is gone (closed, broken, or closed by us
    /// after the agent broke the protocol); see
    /// [`AgentClient::disconnect_reason`](super::AgentClient::disconnect_reason).
    #[error("connection to the agent lost")]
    Disconnected,
    /// The agent refused or failed the request.
    #[error("agent error: {0}")]
    Agent(ErrorBody),
    /// The agent answered with something that does not fit the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The call's arguments are invalid (checked before anything is sent).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The agent closed a stream this side was still writing (the reader
    /// went away, e.g. the process exited).
    #[error("the agent closed stream {0}")]
    StreamClosed(u32),
    /// Reading a local source (e.g. the file given to `copy_in`) failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}
