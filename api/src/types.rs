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

/// `POST /v1/images`: pull from a registry, import an archive or layout
/// from the daemon's file system, or build a built-in image. Exactly one
/// of `pull`, `archive` and `builtin`.
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
    /// A registry reference to pull (`host[:port]/repo[:tag][@digest]`).
    #[serde(default)]
    pub pull: Option<String>,
    /// Credentials for the registry of `pull`.
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// Credentials sent to a registry: a user and password, or a bearer
/// token obtained elsewhere.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password (with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token (instead of a user and password).
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// One line of a pull's progress (`POST /v1/images` with `Accept:
/// application/x-ndjson`): a JSON object per line, the last one `done` or
/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PullProgress {
    /// The linux/amd64 manifest is known.
    Resolved {
        /// The manifest's digest.
        digest: String,
        /// How many layers.
        layers: usize,
        /// Sum of the layer sizes.
        bytes: u64,
    },
    /// Bytes of a layer arrived.
    Downloading {
        /// Which layer (0 = bottom).
        layer: usize,
        /// The layer blob.
        digest: String,
        /// Bytes received so far.
        current: u64,
        /// The layer's size.
        total: u64,
    },
    /// A layer is stored and verified.
    LayerDone {
        /// Which layer (0 = bottom).
        layer: usize,
        /// The layer blob.
        digest: String,
        /// The layer's size.
        total: u64,
        /// It was stored already: nothing was fetched.
        cached: bool,
    },
    /// The image is in the store under its name.
    Done {
        /// The image.
        image: ImageInfo,
    },
    /// The pull failed; nothing partial is kept.
    Error {
        /// What failed.
        error: ErrorDetail,
    },
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
