//! The REST routes: paths, request parsing and answers. Handlers only
//! translate between HTTP and the [`Backend`]; sandbox logic lives in the
//! runtime.
//!
//! Every request body is parsed here (not by axum's `Json`, whose
//! rejections are plain text with a 422): malformed JSON, unknown fields and
//! wrong types are all `400 invalid_request` in the usual error shape, and
//! so are bad query strings, unknown routes (404) and wrong methods (405).
//!
//! The streaming routes (`/exec/ws`, `/attach/ws`) answer errors found
//! before the upgrade as HTTP, and later ones as the protocol's `error`
//! message ([`crate::stream`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_runtime::image::Credentials;
use cocoon_runtime::sandbox::{
    ExecSpec, ListFilter, LogStream, SandboxError, SandboxSpec, SandboxState,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, PullSpec};
use crate::error::ApiError;
use crate::metrics::{Histogram, CREATE_BUCKETS, EXEC_BUCKETS};
use crate::openapi;
use crate::stream;
use crate::types::{ErrorDetail, Health, ImportRequest, PullProgress};

/// Largest request body (an exec's stdin is up to 16 MiB).
pub const MAX_BODY: usize = 20 << 20;

/// Every route: method and path as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/health"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/v1/sandboxes"),
    ("post", "/v1/sandboxes"),
    ("get", "/v1/sandboxes/{id}"),
    ("delete", "/v1/sandboxes/{id}"),
    ("post", "/v1/sandboxes/{id}/stop"),
    ("post", "/v1/sandboxes/{id}/wait"),
    ("post", "/v1/sandboxes/{id}/exec"),
    ("get", "/v1/sandboxes/{id}/exec/ws"),
    ("get", "/v1/sandboxes/{id}/attach/ws"),
    ("get", "/v1/sandboxes/{id}/logs"),
    ("get", "/v1/sandboxes/{id}/files"),
    ("put", "/v1/sandboxes/{id}/files"),
    ("get", "/v1/sandboxes/{id}/files/stat"),
    ("get", "/v1/images"),
    ("post", "/v1/images"),
    ("delete", "/v1/images/{name}"),
];

/// Counters for `/metrics`.
#[derive(Debug)]
pub struct Counters {
    creates: AtomicU64,
    create_failures: AtomicU64,
    execs: AtomicU64,
    exec_failures: AtomicU64,
    /// Seconds from a create request to a running sandbox.
    create_seconds: Histogram,
    /// Seconds of simple-mode execs, request to exit.
    exec_seconds: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            creates: AtomicU64::new(0),
            create_failures: AtomicU64::new(0),
            execs: AtomicU64::new(0),
            exec_failures: AtomicU64::new(0),
            create_seconds: Histogram::new(CREATE_BUCKETS),
            exec_seconds: Histogram::new(EXEC_BUCKETS),
        }
    }
}

struct AppState<B> {
    backend: B,
    counters: Counters,
}

type Shared<B> = State<Arc<AppState<B>>>;

/// The API on `backend`.
pub fn router<B: Backend>(backend: B) -> Router {
    let state = Arc::new(AppState {
        backend,
        counters: Counters::default(),
    });
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics::<B>))
        .route("/v1/sandboxes", get(list::<B>).post(create::<B>))
        .route("/v1/sandboxes/{id}", get(inspect::<B>).delete(delete::<B>))
        .route("/v1/sandboxes/{id}/stop", post(stop::<B>))
        .route("/v1/sandboxes/{id}/wait", post(wait::<B>))
        .route("/v1/sandboxes/{id}/exec", post(exec::<B>))
        .route("/v1/sandboxes/{id}/exec/ws", get(exec_ws::<B>))
        .route("/v1/sandboxes/{id}/attach/ws", get(attach_ws::<B>))
        .route("/v1/sandboxes/{id}/logs", get(logs::<B>))
        .route(
            "/v1/sandboxes/{id}/files",
            get(get_file::<B>).put(put_file::<B>),
        )
        .route("/v1/sandboxes/{id}/files/stat", get(stat_file::<B>))
        .route("/v1/images", get(images::<B>).post(import::<B>))
        .route(
            "/v1/images/{name}",
            axum::routing::delete(remove_image::<B>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Parses a JSON body into `T`, whatever the content type says.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_request"
        };
        ApiError::new(status, code, e.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

fn parse_query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn openapi_json() -> Result<Response, ApiError> {
    let doc = openapi::document().map_err(ApiError::internal)?;
    Ok(Json(doc).into_response())
}

async fn metrics<B: Backend>(State(st): Shared<B>) -> Response {
    let counts = st.backend.counts();
    let mut out = String::new();
    out.push_str("# HELP cocoon_sandboxes Sandboxes by state.\n# TYPE cocoon_sandboxes gauge\n");
    for s in SandboxState::ALL {
        if s == SandboxState::Deleted {
            continue;
        }
        let n = counts.get(&s).copied().unwrap_or(0);
        out.push_str(&format!("cocoon_sandboxes{{state=\"{s}\"}} {n}\n"));
    }
    let pool = st.backend.warm_pool();
    out.push_str(&format!(
        "# HELP cocoon_warm_pool_ready VMs booted ahead of demand (cocoond --warm-pool).\n\
         # TYPE cocoon_warm_pool_ready gauge\ncocoon_warm_pool_ready {}\n",
        pool.ready
    ));
    for (name, help, v) in [
        ("hits", "Creates that took a warm VM.", pool.hits),
        (
            "misses",
            "Creates that could have used a warm VM but booted their own.",
            pool.misses,
        ),
    ] {
        out.push_str(&format!(
            "# HELP cocoon_warm_pool_{name}_total {help}\n# TYPE cocoon_warm_pool_{name}_total counter\ncocoon_warm_pool_{name}_total {v}\n"
        ));
    }
    let c = &st.counters;
    for (name, help, v) in [
        (
            "cocoon_sandbox_creates_total",
            "Sandbox create requests that were valid.",
            &c.creates,
        ),
        (
            "cocoon_sandbox_create_failures_total",
            "Valid sandbox creates that failed.",
            &c.create_failures,
        ),
        (
            "cocoon_execs_total",
            "Exec requests that were valid.",
            &c.execs,
        ),
        (
            "cocoon_exec_failures_total",
            "Valid execs that failed.",
            &c.exec_failures,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    c.create_seconds.render(
        &mut out,
        "cocoon_sandbox_create_seconds",
        "Seconds from a create request to a running sandbox (successful creates).",
    );
    c.exec_seconds.render(
        &mut out,
        "cocoon_exec_seconds",
        "Seconds from an exec request to the process's exit (successful execs).",
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `GET /v1/sandboxes` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only sandboxes in this state.
    state: Option<String>,
    /// `key=value[,key=value...]`: only sandboxes with all these labels.
    label: Option<String>,
}

fn list_filter(q: ListQuery) -> Result<ListFilter, ApiError> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(SandboxState::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "state: {:?} is not one of creating, running, stopped, failed",
                s.chars().take(32).collect::<String>()
            ))
        })?),
    };
    let mut labels = Vec::new();
    for kv in q
        .label
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| ApiError::invalid("label: give key=value[,key=value...]"))?;
        labels.push((k.to_string(), v.to_string()));
    }
    Ok(ListFilter { state, labels })
}

async fn list<B: Backend>(
    State(st): Shared<B>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = list_filter(parse_query(q)?)?;
    Ok(Json(st.backend.list(&filter)).into_response())
}

async fn create<B: Backend>(
    State(st): Shared<B>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec: SandboxSpec = parse_body(body)?;
    spec.validate()
        .and_then(|()| st.backend.limits().check(&spec))
        .map_err(cocoon_runtime::sandbox::SandboxError::from)?;
    st.counters.creates.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    match st.backend.create(spec).await {
        Ok(r) => {
            st.counters.create_seconds.observe(start.elapsed());
            Ok((StatusCode::CREATED, Json(r)).into_response())
        }
        Err(e) => {
            st.counters.create_failures.fetch_add(1, Ordering::Relaxed);
            Err(e.into())
        }
    }
}

async fn inspect<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.backend.get(&id)?).into_response())
}

/// Longest grace a stop may give the init, seconds.
pub const MAX_STOP_TIMEOUT_S: u64 = 3600;

/// `POST /v1/sandboxes/{id}/stop` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopQuery {
    /// Seconds the init gets after SIGTERM before the VM is killed.
    timeout: Option<u64>,
}

async fn stop<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<StopQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    let grace = match q.timeout {
        Some(t) if t > MAX_STOP_TIMEOUT_S => {
            return Err(ApiError::invalid(format!(
                "timeout: at most {MAX_STOP_TIMEOUT_S} seconds"
            )))
        }
        t => t.map(Duration::from_secs),
    };
    Ok(Json(st.backend.stop(&id, grace).await?).into_response())
}

async fn wait<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.backend.wait(&id).await?).into_response())
}

async fn delete<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.backend.delete(&id).await?).into_response())
}

async fn exec<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let spec: ExecSpec = parse_body(body)?;
    spec.validate()
        .map_err(cocoon_runtime::sandbox::SandboxError::from)?;
    // Unknown sandboxes are 404 before anything is counted.
    st.backend.get(&id)?;
    st.counters.execs.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    match st.backend.exec(&id, spec).await {
        Ok(out) => {
            st.counters.exec_seconds.observe(start.elapsed());
            Ok(Json(out).into_response())
        }
        Err(e) => {
            st.counters.exec_failures.fetch_add(1, Ordering::Relaxed);
            Err(e.into())
        }
    }
}

fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map(|ws| ws.max_message_size(stream::MAX_MESSAGE))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!("this route is a WebSocket: {}", e.body_text()),
            )
        })
}

async fn exec_ws<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let r = st.backend.get(&id)?;
    if r.state != SandboxState::Running {
        return Err(SandboxError::WrongState {
            id,
            state: r.state,
            op: "exec",
        }
        .into());
    }
    let ws = upgrade(ws)?;
    Ok(ws.on_upgrade(move |mut socket| async move {
        let spec = match stream::read_start(&mut socket).await {
            Ok(s) => s,
            Err(e) => return stream::fail(socket, e).await,
        };
        if let Err(e) = spec.validate() {
            return stream::fail(socket, SandboxError::from(e).into()).await;
        }
        st.counters.execs.fetch_add(1, Ordering::Relaxed);
        let tty = spec.tty;
        match st.backend.exec_stream(&id, spec).await {
            Ok(io) => stream::serve(socket, io, tty).await,
            Err(e) => {
                st.counters.exec_failures.fetch_add(1, Ordering::Relaxed);
                stream::fail(socket, e.into()).await
            }
        }
    }))
}

/// `GET /v1/sandboxes/{id}/attach/ws` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachQuery {
    /// Take the init's stdin.
    #[serde(default)]
    stdin: bool,
    /// Send the log from its start first.
    #[serde(default)]
    logs: bool,
}

async fn attach_ws<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<AttachQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    st.backend.get(&id)?;
    let ws = upgrade(ws)?;
    let io = st.backend.attach(&id, q.stdin, q.logs).await?;
    Ok(ws.on_upgrade(move |socket| stream::serve(socket, io, false)))
}

/// `GET /v1/sandboxes/{id}/logs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// `stdout`, `stderr` or `all` (the default).
    stream: Option<String>,
    /// Keep the answer open and send output as it is written, until the
    /// sandbox stops.
    #[serde(default)]
    follow: bool,
}

async fn logs<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    let stream = match q.stream.as_deref() {
        None | Some("all") => None,
        Some("stdout") => Some(LogStream::Stdout),
        Some("stderr") => Some(LogStream::Stderr),
        Some(_) => return Err(ApiError::invalid("stream: give stdout, stderr or all")),
    };
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    if !q.follow {
        let bytes = st.backend.logs(&id, stream).await?;
        return Ok((octets, bytes).into_response());
    }
    // Chunked: each piece of output as it is written; hyper asks for the
    // next only once the last was sent, so a slow reader holds one chunk.
    let rx = st.backend.follow_logs(&id, stream).await?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let c = rx.recv().await?;
        Some((Ok::<_, Infallible>(c.data), rx))
    });
    Ok((octets, Body::from_stream(body)).into_response())
}

async fn images<B: Backend>(State(st): Shared<B>) -> Result<Response, ApiError> {
    Ok(Json(st.backend.images().await?).into_response())
}

async fn import<B: Backend>(
    State(st): Shared<B>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ImportRequest = parse_body(body)?;
    match (&req.archive, &req.builtin, &req.pull) {
        (Some(a), None, None) if a.starts_with('/') && !a.contains('\0') => {}
        (Some(_), None, None) => return Err(ApiError::invalid("archive: give an absolute path")),
        (None, Some(b), None) if b == "busybox" => {
            if req.reference.is_some() {
                return Err(ApiError::invalid("reference: only with archive"));
            }
        }
        (None, Some(b), None) => {
            return Err(ApiError::invalid(format!(
                "builtin: {:?} is not a built-in image (there is busybox)",
                b.chars().take(64).collect::<String>()
            )))
        }
        (None, None, Some(_)) => return pull(st, &headers, req).await,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of pull, archive and builtin",
            ))
        }
    }
    if req.auth.is_some() {
        return Err(ApiError::invalid("auth: only with pull"));
    }
    Ok((StatusCode::CREATED, Json(st.backend.import(req).await?)).into_response())
}

/// `POST /v1/images` with `pull`: `201` and the image, or with `Accept:
/// application/x-ndjson` a `200` stream of [`PullProgress`] lines.
async fn pull<B: Backend>(
    st: Arc<AppState<B>>,
    headers: &HeaderMap,
    req: ImportRequest,
) -> Result<Response, ApiError> {
    let Some(reference) = req.pull else {
        return Err(ApiError::invalid("pull: give a reference"));
    };
    if reference.is_empty() || reference.len() > 1024 || reference.contains(char::is_whitespace) {
        return Err(ApiError::invalid(
            "pull: give a reference host[:port]/repo[:tag][@digest]",
        ));
    }
    if req.reference.is_some() {
        return Err(ApiError::invalid("reference: only with archive"));
    }
    let credentials = match req.auth {
        None => Credentials::Anonymous,
        Some(a) => match (a.username, a.password, a.token) {
            (Some(username), Some(password), None) => Credentials::Basic { username, password },
            (None, None, Some(token)) => Credentials::Token(token),
            _ => {
                return Err(ApiError::invalid(
                    "auth: give username and password, or token",
                ))
            }
        },
    };
    let spec = PullSpec {
        reference,
        name: req.name,
        credentials,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    if !streaming {
        drop(rx);
        let image = st.backend.pull(spec, tx).await?;
        return Ok((StatusCode::CREATED, Json(image)).into_response());
    }
    // The pull runs to its end even if the client goes away.
    let done = tx.clone();
    tokio::spawn(async move {
        let last = match st.backend.pull(spec, tx).await {
            Ok(image) => PullProgress::Done { image },
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::error!(code = e.code, "pull: {}", e.message);
                }
                PullProgress::Error {
                    error: ErrorDetail {
                        code: e.code.to_string(),
                        message: e.message,
                        sandbox_id: None,
                    },
                }
            }
        };
        let _ = done.send(last);
    });
    let lines = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|ev| {
            ev.map(|ev| {
                let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(line))
            })
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// `GET` and `PUT /v1/sandboxes/{id}/files` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesQuery {
    /// Absolute path in the sandbox.
    path: String,
    /// `raw` (one file, the default) or `tar` (an archive).
    format: Option<String>,
    /// Octal permission bits of a file written (`PUT`, `raw`); default 0644.
    mode: Option<String>,
}

impl FilesQuery {
    fn tar(&self) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            None | Some("raw") => Ok(false),
            Some("tar") => Ok(true),
            Some(_) => Err(ApiError::invalid("format: give raw or tar")),
        }
    }
}

/// The answer to a file upload.
#[derive(Debug, Serialize)]
struct FileWritten {
    path: String,
    bytes: u64,
}

async fn put_file<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<FilesQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    let tar = q.tar()?;
    let mode = match q.mode.as_deref() {
        None => 0o644,
        Some(_) if tar => return Err(ApiError::invalid("mode: only with format=raw")),
        // Exactly what the document's pattern allows: 1 to 4 octal digits
        // (from_str_radix alone would also take a sign or leading zeros).
        Some(m) if (1..=4).contains(&m.len()) && m.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            u32::from_str_radix(m, 8)
                .map_err(|_| ApiError::invalid("mode: give octal permission bits, e.g. 0644"))?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "mode: give 1 to 4 octal digits, e.g. 0644",
            ))
        }
    };
    let bytes = st.backend.put_file(&id, &q.path, tar, mode, body).await?;
    Ok(Json(FileWritten {
        path: q.path,
        bytes,
    })
    .into_response())
}

/// `GET /v1/sandboxes/{id}/files/stat` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatQuery {
    /// Absolute path in the sandbox.
    path: String,
}

async fn stat_file<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<StatQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    Ok(Json(st.backend.stat_file(&id, &q.path).await?).into_response())
}

async fn get_file<B: Backend>(
    State(st): Shared<B>,
    Path(id): Path<String>,
    q: Result<Query<FilesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = parse_query(q)?;
    let tar = q.tar()?;
    if q.mode.is_some() {
        return Err(ApiError::invalid("mode: only when writing"));
    }
    let data = st.backend.get_file(&id, &q.path, tar).await?;
    let kind = if tar {
        "application/x-tar"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind)], Body::from_stream(data)).into_response())
}

async fn remove_image<B: Backend>(
    State(st): Shared<B>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.backend.remove_image(&name).await?).into_response())
}
