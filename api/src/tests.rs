//! Router tests on a fake backend: requests go through the real axum
//! router (`tower::ServiceExt::oneshot`), no VM is involved.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use cocoon_proto::{FileKind, PathInfo, Process, User};
use cocoon_runtime::sandbox::{
    ExecOutput, ExecSpec, ExitInfo, Limits, ListFilter, LogStream, SandboxError, SandboxRecord,
    SandboxSpec, SandboxState,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::backend::{Backend, ByteStream, PullSpec};
use crate::error::ApiError;
use crate::routes::{router, ROUTES};
use crate::server::with_token;
use crate::types::{ErrorResponse, ImageInfo, ImportRequest, PullProgress, RemovedImage};
use cocoon_runtime::image::Credentials;
use cocoon_runtime::sandbox::{FileError, FileErrorKind};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Default)]
struct Fake {
    sandboxes: Mutex<Vec<SandboxRecord>>,
    /// Files "in" the sandboxes: (id, path, tar) → bytes.
    files: Mutex<BTreeMap<(String, String, bool), Vec<u8>>>,
    /// The daemon's size limits.
    limits: Limits,
}

fn record(id: &str, spec: SandboxSpec) -> SandboxRecord {
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
    async fn stop(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
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

    let a = call(
        &app,
        Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
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
        Some(r#"{"image":"busybox","network":"default"}"#),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code()),
        (StatusCode::BAD_REQUEST, "unsupported".into())
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
