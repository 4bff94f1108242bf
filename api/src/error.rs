//! [`ApiError`]: an HTTP status with a stable code and a message, answered
//! as `{"error": {"code", "message"}}`.
//!
//! Client mistakes are 400, unknown things 404, wrong states 409; only
//! Cocoon's own failures are 500. Every runtime error is classified here,
//! in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cocoon_runtime::image::catalog::CatalogError;
use cocoon_runtime::image::ImageError;
use cocoon_runtime::image::RegistryError;
use cocoon_runtime::sandbox::{ErrorKind, FileErrorKind, SandboxError};

use crate::types::{ErrorDetail, ErrorResponse};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// A sandbox left behind in state `failed`.
    pub sandbox_id: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            sandbox_id: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                sandbox_id: self.sandbox_id,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        let message = e.to_string();
        let (status, code) = match (&e, e.kind()) {
            (
                SandboxError::ProcessRejected {
                    executable_not_found: true,
                    ..
                },
                _,
            ) => (StatusCode::BAD_REQUEST, "executable_not_found"),
            (SandboxError::ProcessRejected { .. }, _) => {
                (StatusCode::BAD_REQUEST, "process_rejected")
            }
            (SandboxError::ImageNotFound(_), _) => (StatusCode::NOT_FOUND, "image_not_found"),
            (SandboxError::File(f), _) => match f.kind {
                FileErrorKind::NotFound => (StatusCode::NOT_FOUND, "file_not_found"),
                FileErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
                FileErrorKind::Invalid => (StatusCode::BAD_REQUEST, "file_error"),
            },
            // Capacity, not a fault: the client may try again later.
            (SandboxError::Network(cocoon_runtime::network::NetError::PoolExhausted(_)), _) => {
                (StatusCode::SERVICE_UNAVAILABLE, "network_exhausted")
            }
            (SandboxError::CreateFailed { .. }, _) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "sandbox_failed")
            }
            (_, ErrorKind::Invalid) => (StatusCode::BAD_REQUEST, "invalid_request"),
            (_, ErrorKind::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
            (_, ErrorKind::Conflict) => (StatusCode::CONFLICT, "wrong_state"),
            (_, ErrorKind::Internal) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let sandbox_id = match e {
            SandboxError::ProcessRejected { failed_sandbox, .. } => failed_sandbox,
            SandboxError::CreateFailed { id, .. } => Some(id),
            _ => None,
        };
        ApiError {
            status,
            code,
            message,
            sandbox_id,
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            ImageError::Catalog(CatalogError::Unknown(_)) => {
                (StatusCode::NOT_FOUND, "image_not_found")
            }
            ImageError::Catalog(CatalogError::BadName { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            // The archive the client named is missing or not an image.
            ImageError::Import(_) | ImageError::Unpack(_) => {
                (StatusCode::BAD_REQUEST, "invalid_image")
            }
            ImageError::InUse(_) => (StatusCode::CONFLICT, "image_in_use"),
            ImageError::Registry(r) => match r.as_ref() {
                RegistryError::BadReference { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
                RegistryError::UnknownImage { .. } => (StatusCode::NOT_FOUND, "image_not_found"),
                RegistryError::AuthRefused { .. } => {
                    (StatusCode::FORBIDDEN, "registry_auth_refused")
                }
                RegistryError::Unreachable { .. } => {
                    (StatusCode::BAD_GATEWAY, "registry_unreachable")
                }
                RegistryError::Tls { .. } => (StatusCode::BAD_GATEWAY, "registry_tls"),
                RegistryError::DigestMismatch { .. } | RegistryError::Protocol { .. } => {
                    (StatusCode::BAD_GATEWAY, "registry_error")
                }
                RegistryError::Image(_) => (StatusCode::BAD_REQUEST, "invalid_image"),
                RegistryError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
                RegistryError::CaFile { .. } | RegistryError::Store(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal")
                }
            },
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}
