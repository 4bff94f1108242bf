//! Serving the router: on a Unix socket (the default; access is whoever may
//! open the socket, root by its mode), or on TCP where every request must
//! carry `Authorization: Bearer <token>`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use crate::error::ApiError;

/// Errors setting up a listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket.
    #[error("{0} is in use by a running daemon")]
    SocketInUse(PathBuf),
    /// Socket or file set-up failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path (or address).
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The token file is empty.
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
}

fn io_err(op: &'static str, path: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ServerError {
    let path = path.to_string();
    move |source| ServerError::Io { op, path, source }
}

/// Binds the Unix socket at `path` (mode 0600), replacing a stale socket
/// file but refusing one a live daemon answers on.
pub async fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err("remove stale socket", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod", path.display()))?;
    Ok(listener)
}

/// Reads a bearer token (surrounding whitespace trimmed).
pub fn read_token(path: &Path) -> Result<String, ServerError> {
    let token = std::fs::read_to_string(path).map_err(io_err("read", path.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(ServerError::EmptyToken(path.to_owned()));
    }
    Ok(token)
}

/// `router` behind a check of `Authorization: Bearer <token>`.
pub fn with_token(router: Router, token: String) -> Router {
    router.layer(middleware::from_fn_with_state(
        Arc::new(token),
        require_token,
    ))
}

async fn require_token(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `router` on a Unix listener until `shutdown` resolves.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` on TCP until `shutdown` resolves.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
