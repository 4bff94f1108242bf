//! A small HTTP/1 client over the daemon's Unix socket: one connection per
//! request, JSON in and out, error bodies turned into [`ClientError::Api`];
//! answers read as they come ([`Client::open`]) and WebSockets
//! ([`Client::websocket`]) for the streaming routes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::WebSocketStream;

use crate::types::ErrorResponse;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon's socket could not be reached.
    #[error("cannot reach cocoond at {path}: {source} (is cocoond running?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("talking to cocoond: {0}")]
    Http(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// The status.
        status: StatusCode,
        /// The stable code.
        code: String,
        /// The message.
        message: String,
        /// A sandbox the request left behind in state `failed`.
        sandbox_id: Option<String>,
    },
    /// The answer did not parse.
    #[error("unexpected answer from cocoond: {0}")]
    Decode(String),
}

/// A client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the daemon at `socket`.
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_owned(),
        }
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })
    }

    /// Sends a request; returns the body of a success, to be read as it
    /// comes (an error answer is read whole and returned as the error).
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Incoming, ClientError> {
        let content_type = body.as_ref().map(|_| "application/json");
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed();
        let resp = self.send(method, path, content_type, None, body).await?;
        Ok(resp.into_body())
    }

    /// Sends a request with any body; returns the response of a success
    /// with its body unread (for streams), or the error the daemon answered.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: BoxBody<Bytes, std::io::Error>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "cocoond");
        if let Some(t) = content_type {
            req = req.header(http::header::CONTENT_TYPE, t);
        }
        if let Some(a) = accept {
            req = req.header(http::header::ACCEPT, a);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Err(api_error(status, &bytes))
    }

    /// Sends a request; returns the body of a success.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        Ok(self
            .open(method, path, body)
            .await?
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes())
    }

    /// Opens a WebSocket on `path` (a streaming route, see
    /// [`crate::stream`]); an HTTP error answer is returned as the error.
    pub async fn websocket(&self, path: &str) -> Result<WebSocketStream<UnixStream>, ClientError> {
        let stream = self.connect().await?;
        match tokio_tungstenite::client_async(format!("ws://cocoond{path}"), stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => Err(api_error(
                resp.status(),
                resp.body().as_deref().unwrap_or_default(),
            )),
            Err(e) => Err(ClientError::Http(e.to_string())),
        }
    }

    /// Sends a JSON request (or none) and decodes a JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let bytes = self.raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// The error an answer's body describes (its text when it is not JSON).
pub fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => ClientError::Api {
            status,
            code: e.error.code,
            message: e.error.message,
            sandbox_id: e.error.sandbox_id,
        },
        Err(_) => ClientError::Api {
            status,
            code: "unknown".into(),
            message: String::from_utf8_lossy(body).into_owned(),
            sandbox_id: None,
        },
    }
}

/// Percent-encodes a path segment (image names hold `/` and `:`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value (paths keep their `/`).
pub fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(
            encode_segment("library/busybox:1.36"),
            "library%2Fbusybox%3A1.36"
        );
        assert_eq!(encode_segment("a-b_c.d"), "a-b_c.d");
        assert_eq!(encode_query("/tmp/a b&c=d"), "/tmp/a%20b%26c%3Dd");
    }
}
