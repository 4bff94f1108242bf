//! Router tests on a fake backend: requests go through the real axum
//! router (`tower::ServiceExt::oneshot`), no VM is involved.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use cocoon_proto::{Process, User};
use cocoon_runtime::sandbox::{
    ExecOutput, ExecSpec, ExitInfo, ListFilter, LogStream, SandboxError, SandboxRecord,
    SandboxSpec, SandboxState,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::backend::Backend;
use crate::error::ApiError;
use crate::routes::{router, ROUTES};
use crate::server::with_token;
use crate::types::{ErrorResponse, ImageInfo, ImportRequest, RemovedImage};

#[derive(Default)]
struct Fake {
    sandboxes: Mutex<Vec<SandboxRecord>>,
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
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
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
