//! The JSON bodies of the REST API that are not runtime types: errors,
//! images, health. Shared by the daemon and the CLI so both sides agree.
//! Sandbox records, create and exec requests are the runtime's own
//! ([`cocoon_runtime::sandbox`]).

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
