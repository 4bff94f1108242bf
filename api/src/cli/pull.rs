//! `cocoon pull`: pulls an image through the daemon and shows its progress
//! the way `docker pull` does: a line per layer, updated in place on a
//! terminal.

use std::io::{IsTerminal, Write};

use bytes::BytesMut;
use futures_util::StreamExt;
use http::Method;
use http_body_util::BodyExt;

use crate::client::{Client, ClientError};
use crate::types::{ImageInfo, ImportRequest, PullProgress, RegistryAuth};

/// Longest progress line accepted from the daemon.
const MAX_LINE: usize = 64 << 10;

/// Pulls `reference` (named `name` if given), printing progress to stdout.
pub async fn pull(
    client: &Client,
    reference: &str,
    name: Option<String>,
    auth: Option<RegistryAuth>,
) -> Result<ImageInfo, ClientError> {
    let req = ImportRequest {
        pull: Some(reference.to_string()),
        name,
        auth,
        ..ImportRequest::default()
    };
    let body = serde_json::to_vec(&req).map_err(|e| ClientError::Decode(e.to_string()))?;
    let body = http_body_util::Full::new(bytes::Bytes::from(body))
        .map_err(|never| match never {})
        .boxed();
    let resp = client
        .send(
            Method::POST,
            "/v1/images",
            Some("application/json"),
            Some("application/x-ndjson"),
            body,
        )
        .await?;
    let mut view = View::new(reference, std::io::stdout().is_terminal());
    let mut data = resp.into_body().into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = data.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| ClientError::Http(e.to_string()))?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(end + 1);
            let ev: PullProgress = serde_json::from_slice(&line[..end])
                .map_err(|e| ClientError::Decode(format!("progress line: {e}")))?;
            if let Some(done) = view.show(ev)? {
                return Ok(done);
            }
        }
        if buf.len() > MAX_LINE {
            return Err(ClientError::Decode("progress line too long".into()));
        }
    }
    Err(ClientError::Http(
        "the daemon ended the pull without a result".into(),
    ))
}

/// What is on screen.
struct View {
    reference: String,
    tty: bool,
    /// A progress line is open (not yet ended by a newline).
    open: bool,
    fetched: bool,
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn mb(n: u64) -> String {
    format!("{:.1}MB", n as f64 / 1e6)
}

impl View {
    fn new(reference: &str, tty: bool) -> Self {
        View {
            reference: reference.to_string(),
            tty,
            open: false,
            fetched: false,
        }
    }

    fn line(&mut self, text: &str, keep_open: bool) {
        let mut out = std::io::stdout().lock();
        if self.open {
            let _ = write!(out, "\r\x1b[2K");
        }
        if keep_open {
            let _ = write!(out, "{text}");
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
        self.open = keep_open;
    }

    /// Shows one event; the final image when the pull is done.
    fn show(&mut self, ev: PullProgress) -> Result<Option<ImageInfo>, ClientError> {
        match ev {
            PullProgress::Resolved {
                digest,
                layers,
                bytes,
            } => {
                let text = format!(
                    "{}: resolved {digest} ({layers} layers, {})",
                    self.reference,
                    mb(bytes)
                );
                self.line(&text, false);
            }
            PullProgress::Downloading {
                digest,
                current,
                total,
                ..
            } => {
                self.fetched = true;
                if self.tty {
                    let text = format!(
                        "{}: Downloading {} / {}",
                        short(&digest),
                        mb(current),
                        mb(total)
                    );
                    self.line(&text, true);
                }
            }
            PullProgress::LayerDone { digest, cached, .. } => {
                let what = if cached {
                    "Already exists"
                } else {
                    self.fetched = true;
                    "Pull complete"
                };
                self.line(&format!("{}: {what}", short(&digest)), false);
            }
            PullProgress::Done { image } => {
                let status = if self.fetched {
                    "Downloaded newer image for"
                } else {
                    "Image is up to date for"
                };
                self.line(&format!("Digest: {}", image.digest), false);
                self.line(&format!("Status: {status} {}", self.reference), false);
                return Ok(Some(image));
            }
            PullProgress::Error { error } => {
                if self.open {
                    self.line("", false);
                }
                return Err(ClientError::Api {
                    status: http::StatusCode::OK,
                    code: error.code,
                    message: error.message,
                    sandbox_id: None,
                });
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_shorten() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
        assert_eq!(mb(2_200_000), "2.2MB");
    }

    #[test]
    fn errors_end_the_pull() {
        let mut v = View::new("r", false);
        let e = v
            .show(PullProgress::Error {
                error: crate::types::ErrorDetail {
                    code: "image_not_found".into(),
                    message: "unknown image r".into(),
                    sandbox_id: None,
                },
            })
            .unwrap_err();
        assert!(matches!(e, ClientError::Api { code, .. } if code == "image_not_found"));
    }
}
