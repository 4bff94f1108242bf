//! Router tests on a fake backend: requests go through the real axum
//! router (`tower::ServiceExt::oneshot`), no VM is involved.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use cocoon_proto::{FileKind, PathInfo, Process, User};
use cocoon_runtime::sandbox::stream::{channels, ProcessEnds};
use cocoon_runtime::sandbox::{
    Control, ExecOutput, ExecSpec, ExecStreamSpec, ExitInfo, Limits, ListFilter, LogStream,
    OutputChunk, ProcessIo, SandboxError, SandboxRecord, SandboxSpec, SandboxState,
};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;

use crate::backend::{Backend, ByteStream, PullSpec};
use crate::client::{Client, ClientError};
use crate::error::ApiError;
use crate::routes::{router, ROUTES};
use crate::server::with_token;
use crate::stream::{STDIN, STDOUT};
use crate::types::{
    ClientMessage, ErrorResponse, ImageInfo, ImportRequest, PullProgress, RemovedImage,
};
use cocoon_runtime::image::Credentials;
use cocoon_runtime::sandbox::{FileError, FileErrorKind};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Default)]
struct Fake {
    sandboxes: Mutex<Vec<SandboxRecord>>,
    /// Files "in" the sandboxes: (id, path, tar) → bytes.
    files: Mutex<BTreeMap<(String, String, bool), Vec<u8>>>,
    /// Bytes the fake `yes` got into its output channel.
    produced: Arc<AtomicU64>,
    /// The daemon's size limits.
    limits: Limits,
}

fn exited(code: i32, signal: Option<i32>) -> ExitInfo {
    ExitInfo {
        exit_code: code,
        signal,
        oom_killed: false,
    }
}

fn out(stream: LogStream, data: impl Into<Bytes>) -> OutputChunk {
    OutputChunk {
        stream,
        data: data.into(),
    }
}

/// The fake's processes: `cat` echoes stdin and reports resizes on
/// stdout, exits 0 when stdin closes and 128+n on signal n; `yes` writes
/// forever, counting what got through.
fn fake_process(cmd: &str, ends: ProcessEnds, produced: Arc<AtomicU64>) {
    let ProcessEnds {
        mut stdin,
        output,
        mut control,
        exit,
    } = ends;
    match cmd {
        "yes" => {
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'y'; 64 << 10]);
                while output
                    .send(out(LogStream::Stdout, chunk.clone()))
                    .await
                    .is_ok()
                {
                    produced.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        }
        _ => {
            tokio::spawn(async move {
                let ending = loop {
                    tokio::select! {
                        d = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => match d {
                            Some(d) => { let _ = output.send(out(LogStream::Stdout, d)).await; }
                            None => break Ok(exited(0, None)),
                        },
                        c = control.recv() => match c {
                            Some(Control::Resize { rows, cols }) => {
                                let _ = output.send(out(LogStream::Stdout, format!("size {rows} {cols}\n"))).await;
                            }
                            Some(Control::Signal(n)) => break Ok(exited(128 + n, Some(n))),
                            None => break Err("detached".to_string()),
                        },
                    }
                };
                drop(output);
                let _ = exit.send(ending);
            });
        }
    }
}

fn record(id: &str, spec: SandboxSpec) -> SandboxRecord {
    let spec_network = spec.network;
    SandboxRecord {
        id: id.into(),
        state: SandboxState::Running,
        reason: None,
        process: Process {
            args: if spec.cmd.is_empty() {
                vec!["sh".into()]
            } else {
                spec.cmd.clone()
            },
            env: Vec::new(),
            cwd: "/".into(),
            user: User::default(),
            rlimits: Vec::new(),
            terminal: false,
            console_size: None,
            no_new_privileges: false,
            capabilities: None,
        },
        spec,
        image_digest: "sha256:00".into(),
        created_at: "2024-01-01T00:00:00Z".into(),
        started_at: None,
        finished_at: None,
        deadline_unix: None,
        exit: None,
        vmm: None,
        network: (spec_network == cocoon_runtime::sandbox::Network::Default).then(|| {
            cocoon_runtime::network::HostNetwork::new(cocoon_runtime::network::Pool::DEFAULT)
                .allocate(id)
                .unwrap_or_else(|e| panic!("{e}"))
        }),
    }
}

impl Fake {
    fn find(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(id.into()))
    }
    fn set_state(&self, id: &str, state: SandboxState) -> Result<SandboxRecord, SandboxError> {
        let mut all = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        let s = all
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SandboxError::NotFound(id.into()))?;
        s.state = state;
        Ok(s.clone())
    }
}

impl Backend for Fake {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        if spec.image == "missing" {
            return Err(SandboxError::ImageNotFound(spec.image));
        }
        if spec.image == "crowded" {
            return Err(SandboxError::Network(
                cocoon_runtime::network::NetError::PoolExhausted(
                    cocoon_runtime::network::Pool::DEFAULT,
                ),
            ));
        }
        if spec.cmd.first().map(String::as_str) == Some("nonexistent") {
            return Err(SandboxError::ProcessRejected {
                failed_sandbox: Some("bad".into()),
                executable_not_found: true,
                message: "executable not found: nonexistent".into(),
            });
        }
        let mut all = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        let r = record(&format!("sb{}", all.len()), spec);
        all.push(r.clone());
        Ok(r)
    }
    fn list(&self, filter: &ListFilter) -> Vec<SandboxRecord> {
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .filter(|r| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| r.spec.labels.get(k) == Some(v))
            })
            .cloned()
            .collect()
    }
    fn limits(&self) -> Limits {
        self.limits
    }
    fn get(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.find(id)
    }
    async fn stop(
        &self,
        id: &str,
        _grace: Option<Duration>,
    ) -> Result<SandboxRecord, SandboxError> {
        self.set_state(id, SandboxState::Stopped)
    }
    async fn wait(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.set_state(id, SandboxState::Stopped)
    }
    async fn delete(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        let r = self.set_state(id, SandboxState::Deleted)?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != id);
        Ok(r)
    }
    async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecOutput, SandboxError> {
        let r = self.find(id)?;
        if r.state != SandboxState::Running {
            return Err(SandboxError::WrongState {
                id: id.into(),
                state: r.state,
                op: "exec",
            });
        }
        Ok(ExecOutput {
            stdout: spec.cmd.join(" "),
            stderr: spec.stdin.unwrap_or_default(),
            exit: ExitInfo {
                exit_code: 3,
                signal: None,
                oom_killed: false,
            },
            truncated: false,
            timed_out: false,
        })
    }
    async fn exec_stream(&self, id: &str, spec: ExecStreamSpec) -> Result<ProcessIo, SandboxError> {
        self.find(id)?;
        let cmd = spec.cmd.first().cloned().unwrap_or_default();
        if cmd == "nonexistent" {
            return Err(SandboxError::ProcessRejected {
                failed_sandbox: None,
                executable_not_found: true,
                message: "executable not found: nonexistent".into(),
            });
        }
        let (io, ends) = channels(spec.stdin);
        fake_process(&cmd, ends, self.produced.clone());
        Ok(io)
    }
    async fn attach(&self, id: &str, stdin: bool, logs: bool) -> Result<ProcessIo, SandboxError> {
        self.find(id)?;
        let (io, ends) = channels(stdin);
        tokio::spawn(async move {
            if logs {
                let _ = ends.output.send(out(LogStream::Stdout, "out\n")).await;
                let _ = ends.output.send(out(LogStream::Stderr, "err\n")).await;
            }
            drop(ends.output);
            let _ = ends.exit.send(Ok(exited(3, None)));
        });
        Ok(io)
    }
    async fn follow_logs(
        &self,
        id: &str,
        stream: Option<LogStream>,
    ) -> Result<mpsc::Receiver<OutputChunk>, SandboxError> {
        self.find(id)?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for (s, line) in [(LogStream::Stdout, "out\n"), (LogStream::Stderr, "err\n")] {
                if stream.is_none_or(|w| w == s) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = tx.send(out(s, line)).await;
                }
            }
        });
        Ok(rx)
    }
    async fn logs(&self, id: &str, stream: Option<LogStream>) -> Result<Vec<u8>, SandboxError> {
        self.find(id)?;
        Ok(match stream {
            None => b"out\nerr\n".to_vec(),
            Some(LogStream::Stdout) => b"out\n".to_vec(),
            Some(LogStream::Stderr) => b"err\n".to_vec(),
        })
    }
    fn counts(&self) -> BTreeMap<SandboxState, usize> {
        let mut m = BTreeMap::new();
        for s in self
            .sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            *m.entry(s.state).or_insert(0) += 1;
        }
        m
    }
    async fn images(&self) -> Result<Vec<ImageInfo>, ApiError> {
        Ok(vec![ImageInfo {
            digest: "sha256:00".into(),
            tags: vec!["busybox:latest".into()],
            size: 1,
            created: None,
        }])
    }
    async fn import(&self, req: ImportRequest) -> Result<ImageInfo, ApiError> {
        Ok(ImageInfo {
            digest: "sha256:11".into(),
            tags: req.name.into_iter().collect(),
            size: 2,
            created: None,
        })
    }
    async fn remove_image(&self, name: &str) -> Result<RemovedImage, ApiError> {
        if name == "busybox:latest" {
            Ok(RemovedImage {
                digest: "sha256:00".into(),
            })
        } else {
            Err(ApiError::not_found(format!("no image {name:?}")))
        }
    }
    async fn pull(
        &self,
        spec: PullSpec,
        progress: UnboundedSender<PullProgress>,
    ) -> Result<ImageInfo, ApiError> {
        if spec.reference.ends_with("/missing") {
            return Err(ApiError::not_found("unknown image"));
        }
        let _ = progress.send(PullProgress::Resolved {
            digest: "sha256:22".into(),
            layers: 1,
            bytes: 10,
        });
        let _ = progress.send(PullProgress::LayerDone {
            layer: 0,
            digest: "sha256:33".into(),
            total: 10,
            cached: spec.credentials != Credentials::Anonymous,
        });
        Ok(ImageInfo {
            digest: "sha256:22".into(),
            tags: vec![spec.name.unwrap_or(spec.reference)],
            size: 10,
            created: None,
        })
    }
    async fn put_file(
        &self,
        id: &str,
        path: &str,
        tar: bool,
        mode: u32,
        body: Body,
    ) -> Result<u64, SandboxError> {
        self.find(id)?;
        let data = body
            .collect()
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
            .to_bytes();
        let mut data = data.to_vec();
        if !tar {
            data.extend_from_slice(format!(" mode={mode:o}").as_bytes());
        }
        let n = data.len() as u64;
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((id.into(), path.into(), tar), data);
        Ok(n)
    }
    async fn stat_file(&self, id: &str, path: &str) -> Result<PathInfo, SandboxError> {
        self.find(id)?;
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let (kind, size) = if path == "/" {
            (FileKind::Directory, 0)
        } else if let Some(d) = files.get(&(id.to_string(), path.to_string(), false)) {
            (FileKind::File, d.len() as u64)
        } else {
            return Err(FileError {
                kind: FileErrorKind::NotFound,
                message: format!("{path}: No such file or directory"),
            }
            .into());
        };
        Ok(PathInfo {
            kind,
            size,
            mode: 0o644,
            link_target: None,
        })
    }
    async fn get_file(&self, id: &str, path: &str, tar: bool) -> Result<ByteStream, SandboxError> {
        self.find(id)?;
        let data = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id.to_string(), path.to_string(), tar))
            .cloned()
            .ok_or_else(|| FileError {
                kind: FileErrorKind::NotFound,
                message: format!("{path}: No such file or directory"),
            })?;
        Ok(futures_util::stream::iter([Ok(bytes::Bytes::from(data))]).boxed())
    }
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn error_code(&self) -> String {
        let e: ErrorResponse = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an error body ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        e.error.code
    }
}

async fn call(app: &Router, method: Method, uri: &str, body: Option<&str>) -> Answer {
    call_with(app, method, uri, body, None).await
}

async fn call_with(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Answer {
    call_headers(
        app,
        method,
        uri,
        body,
        auth.map(|a| (header::AUTHORIZATION, a)),
    )
    .await
}

async fn call_headers(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    extra: Option<(header::HeaderName, &str)>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    let req = req
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes()
        .to_vec();
    Answer { status, body }
}

fn app() -> Router {
    router(Fake::default())
}

#[tokio::test]
async fn create_inspect_exec_stop_delete() {
    let app = app();
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","cmd":["sleep","9"],"labels":{"team":"a"}}"#),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let id = a.json()["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(a.json()["state"], "running");

    let a = call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["spec"]["memory_mib"], 256);

    let a = call(
        &app,
        Method::GET,
        "/v1/sandboxes?label=team=a&state=running",
        None,
    )
    .await;
    assert_eq!(a.json().as_array().map(Vec::len), Some(1));
    let a = call(&app, Method::GET, "/v1/sandboxes?label=team=b", None).await;
    assert_eq!(a.json().as_array().map(Vec::len), Some(0));

    let a = call(
        &app,
        Method::POST,
        &format!("/v1/sandboxes/{id}/exec"),
        Some(r#"{"cmd":["echo","hi"],"stdin":"in"}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["stdout"], "echo hi");
    assert_eq!(a.json()["stderr"], "in");
    assert_eq!(a.json()["exit_code"], 3);

    let a = call(
        &app,
        Method::GET,
        &format!("/v1/sandboxes/{id}/logs?stream=stderr"),
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::OK, b"err\n".as_slice())
    );

    for bad in ["timeout=3601", "timeout=-1", "timeout=soon", "grace=1"] {
        let a = call(
            &app,
            Method::POST,
            &format!("/v1/sandboxes/{id}/stop?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.error_code()),
            (StatusCode::BAD_REQUEST, "invalid_request".into()),
            "{bad}"
        );
    }
    let a = call(
        &app,
        Method::POST,
        &format!("/v1/sandboxes/{id}/stop?timeout=5"),
        None,
    )
    .await;
    assert_eq!(a.json()["state"], "stopped");
    let a = call(
        &app,
        Method::POST,
        &format!("/v1/sandboxes/{id}/exec"),
        Some(r#"{"cmd":["true"]}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::CONFLICT, "wrong_state".into())
    );

    let a = call(&app, Method::DELETE, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(a.json()["state"], "deleted");
    let a = call(&app, Method::GET, &format!("/v1/sandboxes/{id}"), None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[tokio::test]
async fn invalid_input_is_400_never_500() {
    let app = app();
    for body in [
        "",
        "not json",
        "[]",
        r#"{"image":"busybox","bogus":1}"#,
        r#"{"image":"busybox","memory_mib":0}"#,
        r#"{"image":"busybox","memory_mib":-5}"#,
        r#"{"image":"busybox","memory_mib":1e30}"#,
        r#"{"image":"busybox","vcpus":100000}"#,
        r#"{"image":"busybox","disk_mib":99999999999}"#,
        r#"{"image":"busybox","env":["NOPE"]}"#,
        r#"{"image":"busybox","network":"host"}"#,
        r#"{"image":42}"#,
        r#"{}"#,
    ] {
        let a = call(&app, Method::POST, "/v1/sandboxes", Some(body)).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.error_code(), "invalid_request", "{body}");
    }
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","network":"host"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","network":"default"}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    assert_eq!(v["network"]["ip"], "10.200.0.2", "{v}");
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"crowded","network":"default"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "network_exhausted".into())
    );
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"missing"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::NOT_FOUND, "image_not_found".into())
    );
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","cmd":["nonexistent"]}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::BAD_REQUEST, "executable_not_found".into())
    );
    assert_eq!(a.json()["error"]["sandbox_id"], "bad");

    let a = call(&app, Method::GET, "/v1/sandboxes?state=sleeping", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(&app, Method::GET, "/v1/sandboxes?color=red", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes/nope/exec",
        Some(r#"{"cmd":["true"]}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes/nope/exec",
        Some(r#"{"cmd":[]}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = call(
        &app,
        Method::GET,
        "/v1/sandboxes/nope/logs?stream=both",
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sizes_over_the_daemon_limits_are_400() {
    let app = router(Fake {
        limits: Limits::new(1, 256, 1024).unwrap_or_else(|e| panic!("{e}")),
        ..Fake::default()
    });
    for (body, field) in [
        (r#"{"image":"busybox","vcpus":64}"#, "vcpus"),
        (r#"{"image":"busybox","memory_mib":65536}"#, "memory_mib"),
        (r#"{"image":"busybox","disk_mib":2048}"#, "disk_mib"),
    ] {
        let a = call(&app, Method::POST, "/v1/sandboxes", Some(body)).await;
        assert_eq!(
            (a.status, a.error_code()),
            (StatusCode::BAD_REQUEST, "invalid_request".into()),
            "{body}"
        );
        let message = a.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.starts_with(field) && message.contains("at most"),
            "{message}"
        );
    }
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox","vcpus":1,"memory_mib":256,"disk_mib":1024}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    // Refused creates are not counted as valid ones.
    let a = call(&app, Method::GET, "/metrics", None).await;
    assert!(String::from_utf8_lossy(&a.body).contains("cocoon_sandbox_creates_total 1\n"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = app();
    let a = call(&app, Method::GET, "/v2/nothing", None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let a = call(&app, Method::PUT, "/v1/sandboxes", None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let app = app();
    for (method, path) in ROUTES {
        let uri = path
            .replace("{id}", "nope")
            .replace("{name}", "busybox%3Alatest");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
        let a = call(&app, method.clone(), &uri, Some("{}")).await;
        assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        if a.status == StatusCode::NOT_FOUND {
            let body = String::from_utf8_lossy(&a.body);
            assert!(
                !body.contains("no such route"),
                "{method} {uri} is not routed"
            );
        }
    }
}

#[tokio::test]
async fn images_import_and_remove() {
    let app = app();
    let a = call(&app, Method::GET, "/v1/images", None).await;
    assert_eq!(a.json()[0]["tags"][0], "busybox:latest");
    let a = call(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"builtin":"busybox"}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = call(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"archive":"/x.tar","name":"x:1"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["tags"][0].clone()),
        (StatusCode::CREATED, "x:1".into())
    );
    for body in [
        r#"{}"#,
        r#"{"archive":"relative.tar"}"#,
        r#"{"builtin":"alpine"}"#,
        r#"{"builtin":"busybox","archive":"/x"}"#,
        r#"{"builtin":"busybox","extra":1}"#,
    ] {
        let a = call(&app, Method::POST, "/v1/images", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let a = call(&app, Method::DELETE, "/v1/images/busybox%3Alatest", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(&app, Method::DELETE, "/v1/images/other", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = app();
    call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox"}"#),
    )
    .await;
    let a = call(&app, Method::GET, "/v1/health", None).await;
    assert_eq!(a.json()["status"], "ok");
    let a = call(&app, Method::GET, "/metrics", None).await;
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        text.contains("cocoon_sandboxes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cocoon_sandboxes{state=\"failed\"} 0"),
        "{text}"
    );
    assert!(text.contains("cocoon_sandbox_creates_total 1"), "{text}");
    assert!(
        text.contains("cocoon_sandbox_create_seconds_bucket{le=\"+Inf\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cocoon_sandbox_create_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("cocoon_exec_seconds_count 0"), "{text}");
    let a = call(&app, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(a.json()["openapi"], "3.0.3");
}

#[tokio::test]
async fn tcp_router_needs_the_token() {
    let app = with_token(app(), "s3cret".into());
    let a = call(&app, Method::GET, "/v1/health", None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let a = call_with(&app, Method::GET, "/v1/health", None, Some("Bearer wrong")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = call_with(&app, Method::GET, "/v1/health", None, Some("Bearer s3cret")).await;
    assert_eq!(a.status, StatusCode::OK);
}

/// The router on a Unix socket (as cocoond serves it), and a client of it.
async fn serve(fake: Fake) -> (tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("cocoond.sock");
    let listener = crate::server::bind_unix(&path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(crate::server::serve_unix(
        listener,
        router(fake),
        std::future::pending(),
    ));
    (dir, Client::new(&path))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>;

async fn running_sandbox(client: &Client) -> String {
    let r: SandboxRecord = client
        .json(
            Method::POST,
            "/v1/sandboxes",
            Some(&SandboxSpec::new("busybox")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.id
}

async fn send_json(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The next message that is not a ping or pong, within 5 s.
async fn next(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message within 5 s"))
            .unwrap_or_else(|| panic!("connection ended"))
            .unwrap_or_else(|e| panic!("{e}"));
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return m;
        }
    }
}

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    match next(ws).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("{e}")),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn expect_closed(ws: &mut Ws) {
    match next(ws).await {
        Message::Close(_) => {}
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn exec_ws_streams_stdin_and_output_resizes_and_reports_the_exit() {
    let (_dir, client) = serve(Fake::default()).await;
    let id = running_sandbox(&client).await;
    let path = format!("/v1/sandboxes/{id}/exec/ws");
    let mut ws = client
        .websocket(&path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    send_json(
        &mut ws,
        serde_json::json!({"type": "start", "cmd": ["cat"], "stdin": true, "tty": true,
                           "size": {"rows": 24, "cols": 80}}),
    )
    .await;
    ws.send(Message::Binary(crate::stream::frame(STDIN, b"hello")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(Bytes::from_static(b"\x01hello"))
    );
    send_json(
        &mut ws,
        serde_json::json!({"type": "resize", "rows": 30, "cols": 100}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(crate::stream::frame(STDOUT, b"size 30 100\n"))
    );
    // Data sent before close_stdin still arrives, then the exit.
    ws.send(Message::Binary(crate::stream::frame(STDIN, b"last")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    send_json(&mut ws, serde_json::json!({"type": "close_stdin"})).await;
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(crate::stream::frame(STDOUT, b"last"))
    );
    let exit = next_json(&mut ws).await;
    assert_eq!(exit["type"], "exit");
    assert_eq!(exit["exit_code"], 0);
    expect_closed(&mut ws).await;

    // A signal reaches the process; its exit says so.
    let mut ws = client
        .websocket(&path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    send_json(
        &mut ws,
        serde_json::json!({"type": "start", "cmd": ["cat"]}),
    )
    .await;
    send_json(&mut ws, serde_json::json!({"type": "signal", "signal": 15})).await;
    let exit = next_json(&mut ws).await;
    assert_eq!(
        (
            exit["type"].clone(),
            exit["exit_code"].clone(),
            exit["signal"].clone()
        ),
        ("exit".into(), 143.into(), 15.into())
    );
    expect_closed(&mut ws).await;
}

#[tokio::test]
async fn exec_ws_errors_before_and_after_the_upgrade() {
    let (_dir, client) = serve(Fake::default()).await;
    let id = running_sandbox(&client).await;
    // Before the upgrade: HTTP errors in the usual shape.
    match client.websocket("/v1/sandboxes/nope/exec/ws").await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::NOT_FOUND, "not_found")
            )
        }
        other => panic!("{other:?}"),
    }
    let a = call(&app(), Method::GET, "/v1/sandboxes/x/attach/ws", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = call(
        &app(),
        Method::GET,
        "/v1/sandboxes/x/logs?follow=maybe",
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // After it: an error message, then close.
    let path = format!("/v1/sandboxes/{id}/exec/ws");
    for (first, code) in [
        (
            serde_json::json!({"type": "start", "cmd": []}),
            "invalid_request",
        ),
        (
            serde_json::json!({"type": "start", "cmd": ["x"], "bogus": 1}),
            "invalid_request",
        ),
        (
            serde_json::json!({"type": "start", "cmd": ["x"], "size": {"rows": 1, "cols": 1}}),
            "invalid_request",
        ),
        (
            serde_json::json!({"type": "resize", "rows": 1, "cols": 1}),
            "invalid_request",
        ),
        (
            serde_json::json!({"type": "start", "cmd": ["nonexistent"]}),
            "executable_not_found",
        ),
    ] {
        let mut ws = client
            .websocket(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        send_json(&mut ws, first.clone()).await;
        let e = next_json(&mut ws).await;
        assert_eq!(
            (e["type"].clone(), e["code"].clone()),
            ("error".into(), code.into()),
            "{first}: {e}"
        );
        expect_closed(&mut ws).await;
    }
    // Breaking the protocol mid-session: an error, and the session ends.
    for bad in [
        Message::Binary(Bytes::from_static(b"\x07what")),
        Message::Text("{\"type\":\"signal\",\"signal\":99}".into()),
        Message::Text("not json".into()),
    ] {
        let mut ws = client
            .websocket(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        send_json(
            &mut ws,
            serde_json::json!({"type": "start", "cmd": ["cat"], "stdin": true}),
        )
        .await;
        ws.send(bad.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        let e = next_json(&mut ws).await;
        assert_eq!(e["code"], "invalid_request", "{bad:?}: {e}");
        expect_closed(&mut ws).await;
    }
}

#[tokio::test]
async fn exec_ws_on_a_stopped_sandbox_is_409_and_a_plain_get_is_426() {
    let (_dir, client) = serve(Fake::default()).await;
    let id = running_sandbox(&client).await;
    let a = call(&app(), Method::GET, "/v1/sandboxes/nope/exec/ws", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    client
        .json::<SandboxRecord>(
            Method::POST,
            &format!("/v1/sandboxes/{id}/stop"),
            None::<&()>,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match client
        .websocket(&format!("/v1/sandboxes/{id}/exec/ws"))
        .await
    {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::CONFLICT, "wrong_state")
            )
        }
        other => panic!("{other:?}"),
    }
    // Without an upgrade (the same router, a running sandbox).
    let app = app();
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox"}"#),
    )
    .await;
    let id = a.json()["id"].as_str().unwrap_or_default().to_string();
    for route in ["exec/ws", "attach/ws"] {
        let a = call(
            &app,
            Method::GET,
            &format!("/v1/sandboxes/{id}/{route}"),
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.error_code()),
            (StatusCode::UPGRADE_REQUIRED, "upgrade_required".into()),
            "{route}"
        );
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_the_process_back() {
    let fake = Fake::default();
    let produced = fake.produced.clone();
    let (_dir, client) = serve(fake).await;
    let id = running_sandbox(&client).await;
    let mut ws = client
        .websocket(&format!("/v1/sandboxes/{id}/exec/ws"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    send_json(
        &mut ws,
        serde_json::json!({"type": "start", "cmd": ["yes"]}),
    )
    .await;
    // Wait until the producer is stuck, then check how far it got.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = produced.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last < 16 << 20,
        "{last} bytes went out while the client read nothing"
    );
    // Reading lets it go on.
    let mut read = 0usize;
    while read < 32 << 20 {
        match next(&mut ws).await {
            Message::Binary(b) => read += b.len() - 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(produced.load(Ordering::Relaxed) > last + (16 << 20));
}

#[tokio::test]
async fn attach_ws_replays_the_log_with_streams_apart_then_the_exit() {
    let (_dir, client) = serve(Fake::default()).await;
    let id = running_sandbox(&client).await;
    let mut ws = client
        .websocket(&format!("/v1/sandboxes/{id}/attach/ws?logs=true"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(Bytes::from_static(b"\x01out\n"))
    );
    assert_eq!(
        next(&mut ws).await,
        Message::Binary(Bytes::from_static(b"\x02err\n"))
    );
    let exit = next_json(&mut ws).await;
    assert_eq!(
        (exit["type"].clone(), exit["exit_code"].clone()),
        ("exit".into(), 3.into())
    );
    expect_closed(&mut ws).await;
    match client
        .websocket(&format!("/v1/sandboxes/{id}/attach/ws?bogus=1"))
        .await
    {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, StatusCode::BAD_REQUEST),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn logs_follow_is_chunked_as_written() {
    let (_dir, client) = serve(Fake::default()).await;
    let id = running_sandbox(&client).await;
    let mut body = client
        .open(
            Method::GET,
            &format!("/v1/sandboxes/{id}/logs?follow=true"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut chunks = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.unwrap_or_else(|e| panic!("{e}"));
        if let Some(d) = f.data_ref() {
            chunks.push(d.clone());
        }
    }
    assert_eq!(
        chunks,
        vec![Bytes::from_static(b"out\n"), Bytes::from_static(b"err\n")]
    );
    let got = client
        .raw(
            Method::GET,
            &format!("/v1/sandboxes/{id}/logs?follow=true&stream=stderr"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, Bytes::from_static(b"err\n"));
}

#[test]
fn stream_messages_have_the_documented_shape() {
    let m: ClientMessage =
        serde_json::from_str(r#"{"type":"signal","signal":2}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m, ClientMessage::Signal { signal: 2 });
    let m: ClientMessage =
        serde_json::from_str(r#"{"type":"close_stdin"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m, ClientMessage::CloseStdin);
    assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"resize","rows":1}"#).is_err());
    let exit = crate::types::ServerMessage::Exit(exited(137, Some(9)));
    assert_eq!(
        serde_json::to_value(&exit).unwrap_or_default(),
        serde_json::json!({"type": "exit", "exit_code": 137, "signal": 9, "oom_killed": false})
    );
}

#[tokio::test]
async fn files_upload_and_download() {
    let app = app();
    let a = call(
        &app,
        Method::POST,
        "/v1/sandboxes",
        Some(r#"{"image":"busybox"}"#),
    )
    .await;
    let id = a.json()["id"].as_str().unwrap_or_default().to_string();
    let url = |q: &str| format!("/v1/sandboxes/{id}/files?{q}");

    let a = call(
        &app,
        Method::PUT,
        &url("path=/tmp/a%20b&mode=0755"),
        Some("data"),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["path"], "/tmp/a b");
    let a = call(&app, Method::GET, &url("path=/tmp/a%20b"), None).await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::OK, &b"data mode=755"[..])
    );
    let a = call(&app, Method::PUT, &url("path=/tmp&format=tar"), Some("TAR")).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(&app, Method::GET, &url("path=/tmp&format=tar"), None).await;
    assert_eq!(a.body, b"TAR");

    // A missing file is a 404 with its own code; the sandbox's absence too.
    let a = call(&app, Method::GET, &url("path=/nope"), None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::NOT_FOUND, "file_not_found".into())
    );
    let a = call(&app, Method::GET, "/v1/sandboxes/zz/files?path=/x", None).await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    for q in [
        "",
        "path=/x&format=zip",
        "path=/x&mode=999",
        "path=/x&mode=17777",
        "path=/x&mode=00644",
        "path=/x&mode=%2B644",
        "path=/x&mode=",
        "path=/x&format=tar&mode=0644",
        "path=/x&other=1",
    ] {
        let a = call(&app, Method::PUT, &url(q), Some("x")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "PUT {q}");
    }
    let a = call(&app, Method::GET, &url("path=/x&mode=0644"), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let stat = |q: &str| format!("/v1/sandboxes/{id}/files/stat?{q}");
    let a = call(&app, Method::GET, &stat("path=/tmp/a%20b"), None).await;
    assert_eq!(
        (a.json()["kind"].clone(), a.json()["size"].clone()),
        ("file".into(), 13.into())
    );
    let a = call(&app, Method::GET, &stat("path=/"), None).await;
    assert_eq!(a.json()["kind"], "directory");
    let a = call(&app, Method::GET, &stat("path=/nope"), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = call(&app, Method::GET, &stat("path=/&x=1"), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pulls_answer_at_once_or_stream_progress() {
    let app = app();
    let a = call(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"pull":"127.0.0.1:5000/busybox:1","name":"bb:1"}"#),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["tags"][0], "bb:1");
    let a = call(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"pull":"127.0.0.1:5000/missing"}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let ndjson = Some((header::ACCEPT, "application/x-ndjson"));
    let a = call_headers(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"pull":"r/x:1","auth":{"username":"u","password":"p"}}"#),
        ndjson.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let lines: Vec<PullProgress> = a
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(matches!(
        lines[1],
        PullProgress::LayerDone { cached: true, .. }
    ));
    assert!(matches!(&lines[2], PullProgress::Done { image } if image.tags == ["r/x:1"]));
    // A failure after the stream started is its last line.
    let a = call_headers(
        &app,
        Method::POST,
        "/v1/images",
        Some(r#"{"pull":"r/missing"}"#),
        ndjson,
    )
    .await;
    let text = String::from_utf8_lossy(&a.body);
    assert!(text.contains(r#""status":"error""#), "{text}");

    for body in [
        r#"{"pull":""}"#,
        r#"{"pull":"a b"}"#,
        r#"{"pull":"r/x","archive":"/x"}"#,
        r#"{"pull":"r/x","reference":"y"}"#,
        r#"{"pull":"r/x","auth":{"username":"u"}}"#,
        r#"{"pull":"r/x","auth":{"username":"u","password":"p","token":"t"}}"#,
        r#"{"builtin":"busybox","auth":{"token":"t"}}"#,
    ] {
        let a = call(&app, Method::POST, "/v1/images", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
}
