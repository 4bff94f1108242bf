//! The JSON bodies of the REST API that are not runtime types: errors,
//! images, health. Shared by the daemon and the CLI so both sides agree.
//! Sandbox records, create and exec requests are the runtime's own
//! ([`cocoon_runtime::sandbox`]).

use cocoon_runtime::sandbox::{ExecStreamSpec, ExitInfo};
use serde::{Deserialize, Serialize};

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable, stable (`invalid_request`, `not_found`, ...).
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// A sandbox the failed request left behind in state `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
}

/// An image as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Manifest digest.
    pub digest: String,
    /// Names pointing at it.
    pub tags: Vec<String>,
    /// Bytes of its blobs.
    pub size: u64,
    /// When the image was built, if it says.
    #[serde(default)]
    pub created: Option<String>,
}

/// `POST /v1/images`: import an archive or layout from the daemon's file
/// system, or build a built-in image. Exactly one of `archive` and
/// `builtin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Absolute path of an OCI archive, a `docker save` archive or an OCI
    /// layout directory, as the daemon sees it.
    #[serde(default)]
    pub archive: Option<String>,
    /// Which image of a multi-image archive (by name or digest).
    #[serde(default)]
    pub reference: Option<String>,
    /// Name to give it (`NAME[:TAG]`); default: the names it carries.
    #[serde(default)]
    pub name: Option<String>,
    /// A built-in image: `busybox` (from the host's static busybox).
    #[serde(default)]
    pub builtin: Option<String>,
}

/// `DELETE /v1/images/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedImage {
    /// The image the name or digest pointed at.
    pub digest: String,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The daemon's version.
    pub version: String,
}

/// A text message from the client on a streaming connection
/// (`/exec/ws`, `/attach/ws`; see [`crate::stream`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The process to run: the first message on `/exec/ws`, and only there.
    Start(ExecStreamSpec),
    /// Set the terminal's size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Send the process a signal (1 to 64, Linux numbers).
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Close the process's stdin once what was sent before is written.
    CloseStdin,
}

/// A text message from the daemon on a streaming connection; each is the
/// last message before the daemon closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The process exited (after all of its output was sent).
    Exit(ExitInfo),
    /// The process could not be started, the client broke the protocol,
    /// or the process ended without an exit status.
    Error(ErrorDetail),
}
