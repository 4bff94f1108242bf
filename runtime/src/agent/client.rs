//! The connection: handshake, the reader and writer tasks, request/response
//! matching, and the typed calls built on it.
//!
//! State shared with the tasks lives in [`Shared`] behind a std mutex that
//! is never held across an `await`. Frames are encoded by the caller (so an
//! unencodable request fails that call, not the connection) and queued to
//! the writer task on an unbounded channel; what it can hold is bounded by
//! the protocol itself: data by the per-stream credit windows, requests by
//! the callers waiting for them, credit frames by the data received.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cocoon_proto::{
    read_frame_async, write_frame_async, ErrorBody, ErrorCode, Event, ExitStatus, Frame, Hello,
    PathInfo, Process, RecvWindow, Request, Response, Rootfs, SendWindow, Stats,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::stream::{Chunk, InputStream, OutputStream};
use super::{Error, Result};

/// Time allowed for a request's answer unless changed with
/// [`AgentClient::with_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Events buffered for [`AgentClient::take_events`] before new ones are
/// dropped.
const EVENT_QUEUE: usize = 256;

/// Longest reply line accepted from the hybrid vsock socket.
const MAX_CONNECT_REPLY: usize = 64;

/// A connection to one sandbox's guest agent. Cheap to clone; the
/// connection closes when the last clone (including those held by
/// [`ExecHandle`]s and streams) is dropped.
#[derive(Clone)]
pub struct AgentClient {
    conn: Arc<Connection>,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent", &self.conn.agent)
            .field("version", &self.conn.version)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Owns the background tasks; dropping it tears the connection down.
struct Connection {
    shared: Arc<Shared>,
    version: u32,
    agent: Option<String>,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.disconnect("client dropped".to_string());
    }
}

/// State shared by the client handles and the two tasks.
pub(super) struct Shared {
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Bytes>,
    tasks: Mutex<Vec<AbortHandle>>,
}

#[derive(Default)]
struct State {
    /// Set once the connection is gone, with the reason.
    lost: Option<String>,
    next_id: u32,
    next_stream: u32,
    pending: HashMap<u32, oneshot::Sender<Result<Response, ErrorBody>>>,
    inbound: HashMap<u32, Inbound>,
    outbound: HashMap<u32, Outbound>,
    events: Option<mpsc::Sender<Event>>,
}

/// A stream the agent sends on.
struct Inbound {
    tx: mpsc::UnboundedSender<Chunk>,
    window: RecvWindow,
}

/// A stream this side sends on.
struct Outbound {
    window: SendWindow,
    notify: Arc<Notify>,
    peer_closed: bool,
}

/// Outcome of asking for send credit.
pub(super) enum Reserve {
    /// This many bytes may be sent now.
    Granted(usize),
    /// Wait on the notifier and ask again.
    Wait(Arc<Notify>),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind, which
        // stay usable; don't turn one panic into many.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes and queues a frame for the writer task.
    pub(super) fn send(&self, frame: &Frame) -> Result<()> {
        let bytes = frame
            .to_vec()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if self.state().lost.is_some() {
            return Err(Error::Disconnected);
        }
        self.out
            .send(Bytes::from(bytes))
            .map_err(|_| Error::Disconnected)
    }

    /// Marks the connection lost (first reason wins), fails everything
    /// outstanding and stops both tasks.
    fn disconnect(&self, reason: String) {
        let (pending, inbound, outbound) = {
            let mut st = self.state();
            if st.lost.is_some() {
                return;
            }
            tracing::debug!(%reason, "agent connection lost");
            st.lost = Some(reason);
            st.events = None;
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.inbound),
                std::mem::take(&mut st.outbound),
            )
        };
        // Dropping the senders fails the waiting calls with Disconnected.
        drop(pending);
        for s in inbound.into_values() {
            let _ = s.tx.send(Chunk::Lost);
        }
        for s in outbound.into_values() {
            s.notify.notify_one();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
    }

    /// Handles one frame from the agent. An error is a protocol violation
    /// that ends the connection.
    fn dispatch(&self, frame: Frame) -> std::result::Result<(), String> {
        match frame {
            Frame::Response { id, result } => {
                let tx = self.state().pending.remove(&id);
                match tx {
                    // The caller may have given up; that is not an error.
                    Some(tx) => drop(tx.send(result)),
                    None => tracing::debug!(id, "answer to a request nobody waits for"),
                }
            }
            Frame::Data { stream, data } => {
                let mut st = self.state();
                let Some(s) = st.inbound.get_mut(&stream) else {
                    // A stream this side just closed; its data is in flight.
                    tracing::debug!(stream, len = data.len(), "data for a closed stream");
                    return Ok(());
                };
                s.window
                    .on_data(data.len())
                    .map_err(|e| format!("stream {stream}: {e}"))?;
                let len = data.len();
                if s.tx.send(Chunk::Data(data)).is_err() {
                    // The reader is going away; credit what it will never read.
                    s.window.on_consumed(len);
                    let credit = s.window.flush_credit();
                    drop(st);
                    if credit > 0 {
                        let _ = self.send(&Frame::Credit {
                            stream,
                            bytes: credit,
                        });
                    }
                }
            }
            Frame::Close { stream } => {
                let mut st = self.state();
                // Dropping the sender ends the reader's stream cleanly.
                st.inbound.remove(&stream);
                if let Some(o) = st.outbound.get_mut(&stream) {
                    o.peer_closed = true;
                    o.notify.notify_one();
                }
            }
            Frame::Credit { stream, bytes } => {
                let mut st = self.state();
                if let Some(o) = st.outbound.get_mut(&stream) {
                    o.window
                        .grant(bytes)
                        .map_err(|e| format!("stream {stream}: {e}"))?;
                    o.notify.notify_one();
                }
            }
            Frame::Event(Event::Unknown) => {}
            Frame::Event(event) => {
                let st = self.state();
                if let Some(tx) = &st.events {
                    if tx.try_send(event).is_err() {
                        tracing::warn!("agent event dropped: queue full or not read");
                    }
                }
            }
            Frame::Error(body) => return Err(format!("agent closed the connection: {body}")),
            Frame::Hello(_) => return Err("unexpected Hello after the handshake".into()),
            Frame::Request { id, .. } => {
                return Err(format!("unexpected request {id} from the agent"))
            }
        }
        Ok(())
    }

    /// Registers an outstanding request under a fresh id.
    fn register_call(&self) -> Result<(u32, oneshot::Receiver<Result<Response, ErrorBody>>)> {
        let mut st = self.state();
        if st.lost.is_some() {
            return Err(Error::Disconnected);
        }
        let id = loop {
            st.next_id = st.next_id.wrapping_add(1);
            if st.next_id != 0 && !st.pending.contains_key(&st.next_id) {
                break st.next_id;
            }
        };
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        Ok((id, rx))
    }

    fn fresh_stream_id(st: &mut State) -> u32 {
        loop {
            st.next_stream = st.next_stream.wrapping_add(1);
            let id = st.next_stream;
            if id != 0 && !st.inbound.contains_key(&id) && !st.outbound.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers a stream the agent will send on.
    pub(super) fn open_inbound(&self) -> Result<(u32, mpsc::UnboundedReceiver<Chunk>)> {
        let mut st = self.state();
        if st.lost.is_some() {
            return Err(Error::Disconnected);
        }
        let id = Self::fresh_stream_id(&mut st);
        let (tx, rx) = mpsc::unbounded_channel();
        st.inbound.insert(
            id,
            Inbound {
                tx,
                window: RecvWindow::new(),
            },
        );
        Ok((id, rx))
    }

    /// Registers a stream this side will send on.
    pub(super) fn open_outbound(&self) -> Result<u32> {
        let mut st = self.state();
        if st.lost.is_some() {
            return Err(Error::Disconnected);
        }
        let id = Self::fresh_stream_id(&mut st);
        st.outbound.insert(
            id,
            Outbound {
                window: SendWindow::new(),
                notify: Arc::new(Notify::new()),
                peer_closed: false,
            },
        );
        Ok(id)
    }

    /// The reader handed `len` bytes of `stream` to its consumer: return
    /// credit when a batch is due.
    pub(super) fn consumed(&self, stream: u32, len: usize) {
        let credit = {
            let mut st = self.state();
            st.inbound
                .get_mut(&stream)
                .and_then(|s| s.window.on_consumed(len))
        };
        if let Some(bytes) = credit {
            // Fails only when disconnected, which the reader will learn.
            let _ = self.send(&Frame::Credit { stream, bytes });
        }
    }

    /// The reader of `stream` went away before the agent closed it: tell the
    /// agent to stop sending.
    pub(super) fn close_inbound(&self, stream: u32) {
        let was_open = self.state().inbound.remove(&stream).is_some();
        if was_open {
            let _ = self.send(&Frame::Close { stream });
        }
    }

    /// Takes up to `want` bytes of credit on an outbound stream.
    pub(super) fn reserve(&self, stream: u32, want: usize) -> Result<Reserve> {
        let mut st = self.state();
        if st.lost.is_some() {
            return Err(Error::Disconnected);
        }
        let Some(o) = st.outbound.get_mut(&stream) else {
            return Err(Error::StreamClosed(stream));
        };
        if o.peer_closed {
            return Err(Error::StreamClosed(stream));
        }
        match o.window.take(want) {
            0 => Ok(Reserve::Wait(o.notify.clone())),
            n => Ok(Reserve::Granted(n)),
        }
    }

    /// Ends an outbound stream from this side (sends `Close` once).
    pub(super) fn close_outbound(&self, stream: u32) -> Result<()> {
        let entry = self.state().outbound.remove(&stream);
        match entry {
            Some(o) if o.peer_closed => Ok(()),
            Some(_) => self.send(&Frame::Close { stream }),
            None => Err(Error::Disconnected),
        }
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        let st = self.state();
        (st.pending.len(), st.inbound.len(), st.outbound.len())
    }
}

/// A request that was sent and whose answer has not been taken yet.
/// Dropping it forgets the request (a late answer is ignored).
pub(super) struct PendingCall {
    shared: Arc<Shared>,
    id: u32,
    rx: oneshot::Receiver<Result<Response, ErrorBody>>,
}

impl PendingCall {
    /// Waits for the answer without a time limit. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<Response> {
        match (&mut self.rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(body)) => Err(Error::Agent(body)),
            Err(_) => Err(Error::Disconnected),
        }
    }

    /// Waits for the answer for at most `after`.
    pub(super) async fn recv_timeout(
        &mut self,
        what: &'static str,
        after: Duration,
    ) -> Result<Response> {
        tokio::time::timeout(after, self.recv())
            .await
            .map_err(|_| Error::Timeout { what, after })?
    }

    /// Polls for the answer (used by [`OutputStream`]'s poll-based reader).
    pub(super) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Response>> {
        use std::future::Future;
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(body)) => Err(Error::Agent(body)),
            Err(_) => Err(Error::Disconnected),
        })
    }
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").field("id", &self.id).finish()
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.shared.state().pending.remove(&self.id);
    }
}

/// Which stdio streams an [`AgentClient::exec`] process gets; the others
/// are connected to `/dev/null` in the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stdio {
    /// Give the process a stdin stream.
    pub stdin: bool,
    /// Give the process a stdout stream (the pty with a terminal).
    pub stdout: bool,
    /// Give the process a stderr stream (not with a terminal).
    pub stderr: bool,
    /// The agent keeps stdout and stderr when this connection goes away,
    /// for [`AgentClient::attach`] from a later one.
    pub keep_output: bool,
}

impl Stdio {
    /// stdin, stdout and stderr.
    pub fn all() -> Self {
        Stdio {
            stdin: true,
            stdout: true,
            stderr: true,
            keep_output: false,
        }
    }

    /// stdout and stderr only.
    pub fn output() -> Self {
        Stdio {
            stdin: false,
            stdout: true,
            stderr: true,
            keep_output: false,
        }
    }

    /// stdout and stderr, kept by the agent across host connections.
    pub fn kept_output() -> Self {
        Stdio {
            keep_output: true,
            ..Stdio::output()
        }
    }
}

/// Per-container files and names for [`AgentClient::create_container`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSetup {
    /// Hostname in the container.
    pub hostname: Option<String>,
    /// Content of `/etc/hosts`.
    pub hosts: Option<String>,
    /// Content of `/etc/resolv.conf`.
    pub resolv_conf: Option<String>,
}

impl AgentClient {
    /// Connects to the agent through the VMM's hybrid vsock Unix socket
    /// `vsock_uds` (`CONNECT <port>` / `OK <n>`), then does the version
    /// handshake. `timeout` bounds each of the two steps and becomes the
    /// request timeout if it is longer than [`DEFAULT_REQUEST_TIMEOUT`].
    pub async fn connect(vsock_uds: &Path, port: u32, timeout: Duration) -> Result<AgentClient> {
        let stream = tokio::time::timeout(timeout, vsock_connect(vsock_uds, port))
            .await
            .map_err(|_| Error::Timeout {
                what: "vsock connect",
                after: timeout,
            })??;
        let client = Self::handshake(stream, timeout).await?;
        Ok(client.with_request_timeout(timeout.max(DEFAULT_REQUEST_TIMEOUT)))
    }

    /// Does the version handshake on an already connected byte stream and
    /// starts the connection's tasks (which need a tokio runtime).
    pub async fn handshake<S>(io: S, timeout: Duration) -> Result<AgentClient>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut r, mut w) = tokio::io::split(io);
        let hello = tokio::time::timeout(timeout, exchange_hello(&mut r, &mut w))
            .await
            .map_err(|_| Error::Timeout {
                what: "agent handshake",
                after: timeout,
            })??;

        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                events: Some(ev_tx),
                ..State::default()
            }),
            out: out_tx,
            tasks: Mutex::new(Vec::new()),
        });
        // The tasks log under the caller's span (which carries the sandbox id).
        let span = tracing::Span::current();
        let reader = tokio::spawn(read_loop(r, shared.clone()).instrument(span.clone()));
        let writer = tokio::spawn(write_loop(w, out_rx, shared.clone()).instrument(span));
        {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.push(reader.abort_handle());
            tasks.push(writer.abort_handle());
        }
        tracing::debug!(version = hello.version, agent = ?hello.agent, "agent connected");
        Ok(AgentClient {
            conn: Arc::new(Connection {
                shared,
                version: hello.version,
                agent: hello.agent,
                events: Mutex::new(Some(ev_rx)),
            }),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// This handle with a different time limit for requests' answers.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The request timeout of this handle.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// The protocol version agreed in the handshake.
    pub fn protocol_version(&self) -> u32 {
        self.conn.version
    }

    /// The agent's self-description from its `Hello`.
    pub fn agent_name(&self) -> Option<&str> {
        self.conn.agent.as_deref()
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.conn.shared.state().lost.is_none()
    }

    /// Why the connection was lost, if it was.
    pub fn disconnect_reason(&self) -> Option<String> {
        self.conn.shared.state().lost.clone()
    }

    /// The agent's events (process exits, OOM). Only the first call gets
    /// the receiver; events are dropped while nobody reads them and the
    /// queue is full.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Event>> {
        self.conn
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.conn.shared
    }

    /// Sends a request and returns the handle to its answer.
    pub(super) fn start(&self, request: Request) -> Result<PendingCall> {
        let shared = self.conn.shared.clone();
        let (id, rx) = shared.register_call()?;
        // From here the guard removes the entry on any early return.
        let call = PendingCall { shared, id, rx };
        call.shared.send(&Frame::Request { id, request })?;
        Ok(call)
    }

    /// Sends any request and waits (with the request timeout) for its
    /// answer. An error answer becomes [`Error::Agent`].
    pub async fn call(&self, request: Request) -> Result<Response> {
        self.start(request)?
            .recv_timeout("agent request", self.timeout)
            .await
    }

    /// Creates a container: mounts its root from `rootfs` and writes its
    /// hostname, hosts and resolv.conf.
    pub async fn create_container(
        &self,
        container_id: &str,
        rootfs: Rootfs,
        setup: ContainerSetup,
    ) -> Result<()> {
        let r = self
            .call(Request::CreateContainer {
                container_id: container_id.to_string(),
                rootfs,
                hostname: setup.hostname,
                hosts: setup.hosts,
                resolv_conf: setup.resolv_conf,
            })
            .await?;
        expect(r, "create_container", |r| matches!(r, Response::Created))
    }

    /// Starts a process in a container. The returned handle holds the
    /// process's stdio streams as asked for in `stdio`.
    pub async fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        process: Process,
        stdio: Stdio,
    ) -> Result<ExecHandle> {
        if process.terminal && stdio.stderr {
            return Err(Error::InvalidArgument(
                "a terminal process has no separate stderr stream".into(),
            ));
        }
        if process.args.is_empty() {
            return Err(Error::InvalidArgument("empty args".into()));
        }
        // Register streams before the request: output may come before the
        // answer does.
        let stdin = stdio
            .stdin
            .then(|| InputStream::open(self.clone()))
            .transpose()?;
        let (stdout, stderr) = self.open_outputs(stdio)?;
        let r = self
            .call(Request::Exec {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                process,
                stdin: stdin.as_ref().map(InputStream::id),
                stdout: stdout.as_ref().map(OutputStream::id),
                stderr: stderr.as_ref().map(OutputStream::id),
                keep_output: stdio.keep_output,
            })
            .await?;
        let Response::Started { pid } = r else {
            return Err(unexpected("exec", &r));
        };
        Ok(ExecHandle {
            client: self.clone(),
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Registers the stdout and stderr streams `stdio` asks for (before
    /// the request: output may come before the answer does).
    fn open_outputs(&self, stdio: Stdio) -> Result<(Option<OutputStream>, Option<OutputStream>)> {
        let open = |want: bool| {
            want.then(|| OutputStream::open(self.clone(), None))
                .transpose()
        };
        Ok((open(stdio.stdout)?, open(stdio.stderr)?))
    }

    /// Takes over the output of a process started with
    /// [`Stdio::keep_output`] by an earlier connection: returns its stdout
    /// and stderr streams (as asked in `stdio`), starting with what the
    /// agent kept meanwhile. `stored` is how many bytes of stdout and
    /// stderr the caller already has (when it knows): what the agent sent
    /// past that is sent again first.
    pub async fn attach(
        &self,
        container_id: &str,
        exec_id: &str,
        stdio: Stdio,
        stored: Option<[u64; 2]>,
    ) -> Result<(Option<OutputStream>, Option<OutputStream>)> {
        let (stdout, stderr) = self.open_outputs(stdio)?;
        let r = self
            .call(Request::Attach {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                stdout: stdout.as_ref().map(OutputStream::id),
                stderr: stderr.as_ref().map(OutputStream::id),
                stdout_from: stored.map(|s| s[0]),
                stderr_from: stored.map(|s| s[1]),
            })
            .await?;
        expect(r, "attach", |r| matches!(r, Response::Done))?;
        Ok((stdout, stderr))
    }

    /// Waits until a process exits, without a time limit (drop the future
    /// to stop waiting).
    pub async fn wait(&self, container_id: &str, exec_id: &str) -> Result<ExitStatus> {
        let r = self
            .start(Request::Wait {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
            })?
            .recv()
            .await?;
        match r {
            Response::Exited(status) => Ok(status),
            other => Err(unexpected("wait", &other)),
        }
    }

    /// Sends a signal to a process.
    pub async fn signal(&self, container_id: &str, exec_id: &str, signal: i32) -> Result<()> {
        let r = self
            .call(Request::Signal {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
            })
            .await?;
        expect(r, "signal", |r| matches!(r, Response::Done))
    }

    /// Sets a terminal process's window size.
    pub async fn resize_tty(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<()> {
        let r = self
            .call(Request::ResizeTty {
                container_id: container_id.to_string(),
                exec_id: exec_id.to_string(),
                rows,
                cols,
            })
            .await?;
        expect(r, "resize_tty", |r| matches!(r, Response::Done))
    }

    /// Copies everything `source` yields into `path` in the container (a
    /// file with `mode`, or with `tar` an archive unpacked at `path`).
    /// Returns the bytes sent. The transfer itself has no time limit, as it
    /// runs at the agent's pace; the final answer has the request timeout.
    pub async fn copy_in<R>(
        &self,
        container_id: &str,
        path: &str,
        tar: bool,
        mode: u32,
        mut source: R,
    ) -> Result<u64>
    where
        R: AsyncRead + Unpin,
    {
        let mut input = InputStream::open(self.clone())?;
        let mut call = self.start(Request::CopyIn {
            container_id: container_id.to_string(),
            path: path.to_string(),
            stream: input.id(),
            tar,
            mode,
        })?;
        let copied = tokio::select! {
            // An answer before the data is all sent can only be a failure.
            r = call.recv() => {
                return match r {
                    Err(e) => Err(e),
                    Ok(r) => Err(unexpected("copy_in (answer before end of data)", &r)),
                };
            }
            n = input.copy_from(&mut source) => n,
        };
        match copied {
            Ok(n) => {
                input.close()?;
                let r = call.recv_timeout("copy_in", self.timeout).await?;
                expect(r, "copy_in", |r| matches!(r, Response::Done))?;
                Ok(n)
            }
            // The agent stopped reading; its answer says why.
            Err(Error::StreamClosed(s)) => {
                let r = call.recv_timeout("copy_in", self.timeout).await?;
                expect(r, "copy_in", |r| matches!(r, Response::Done))?;
                Err(Error::StreamClosed(s))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `path` (with `tar`, an archive of it) out of the container.
    /// The stream ends (`Ok(None)`) only after the agent has closed it and
    /// answered `Done`; an error answer is returned from the stream.
    pub async fn copy_out(
        &self,
        container_id: &str,
        path: &str,
        tar: bool,
    ) -> Result<OutputStream> {
        let mut out = OutputStream::open(self.clone(), None)?;
        let call = self.start(Request::CopyOut {
            container_id: container_id.to_string(),
            path: path.to_string(),
            stream: out.id(),
            tar,
        })?;
        out.set_completion(call);
        Ok(out)
    }

    /// Resource usage of a container.
    pub async fn stats(&self, container_id: &str) -> Result<Stats> {
        let r = self
            .call(Request::Stats {
                container_id: container_id.to_string(),
            })
            .await?;
        match r {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// What `path` in the container is (a final symlink is not followed).
    pub async fn stat(&self, container_id: &str, path: &str) -> Result<PathInfo> {
        let r = self
            .call(Request::Stat {
                container_id: container_id.to_string(),
                path: path.to_string(),
            })
            .await?;
        match r {
            Response::PathInfo(p) => Ok(p),
            other => Err(unexpected("stat", &other)),
        }
    }

    /// Asks the agent to stop everything and power the VM off. The VM going
    /// away before the answer arrives counts as success.
    pub async fn shutdown(&self) -> Result<()> {
        match self.call(Request::Shutdown).await {
            Ok(r) => expect(r, "shutdown", |r| matches!(r, Response::Done)),
            Err(Error::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn unexpected(call: &str, r: &Response) -> Error {
    Error::Protocol(format!("unexpected answer to {call}: {r:?}"))
}

fn expect(r: Response, call: &str, ok: impl Fn(&Response) -> bool) -> Result<()> {
    if ok(&r) {
        Ok(())
    } else {
        Err(unexpected(call, &r))
    }
}

/// A running process started by [`AgentClient::exec`].
#[derive(Debug)]
pub struct ExecHandle {
    client: AgentClient,
    container_id: String,
    exec_id: String,
    pid: u32,
    stdin: Option<InputStream>,
    stdout: Option<OutputStream>,
    stderr: Option<OutputStream>,
}

impl ExecHandle {
    /// The process's pid in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process's exec id.
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// The stdin writer, if stdin was asked for and not taken.
    pub fn stdin(&mut self) -> Option<&mut InputStream> {
        self.stdin.as_mut()
    }

    /// Takes the stdin writer (e.g. to feed it from another task).
    pub fn take_stdin(&mut self) -> Option<InputStream> {
        self.stdin.take()
    }

    /// Takes the stdout (or pty) reader.
    pub fn take_stdout(&mut self) -> Option<OutputStream> {
        self.stdout.take()
    }

    /// Takes the stderr reader.
    pub fn take_stderr(&mut self) -> Option<OutputStream> {
        self.stderr.take()
    }

    /// Writes to stdin, waiting for credit as needed.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.stdin {
            Some(s) => s.write_all(data).await,
            None => Err(Error::InvalidArgument("no stdin stream".into())),
        }
    }

    /// Closes stdin (the process reads EOF). Does nothing if stdin was not
    /// asked for or was taken.
    pub fn close_stdin(&mut self) -> Result<()> {
        match self.stdin.take() {
            Some(s) => s.close(),
            None => Ok(()),
        }
    }

    /// Waits for the process to exit (no time limit; drop to stop waiting).
    pub async fn wait(&self) -> Result<ExitStatus> {
        self.client.wait(&self.container_id, &self.exec_id).await
    }

    /// Sends the process a signal.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.client
            .signal(&self.container_id, &self.exec_id, signal)
            .await
    }

    /// Sets the terminal size.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.client
            .resize_tty(&self.container_id, &self.exec_id, rows, cols)
            .await
    }
}

/// `CONNECT <port>\n` → `OK <n>\n` on the hybrid vsock socket.
async fn vsock_connect(path: &Path, port: u32) -> Result<UnixStream> {
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Byte by byte: whatever follows the newline belongs to the agent.
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            break;
        }
        if b[0] == b'\n' {
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.starts_with("OK ") {
                return Ok(s);
            }
            return Err(Error::VsockRefused { port, reply: text });
        }
        line.push(b[0]);
        if line.len() > MAX_CONNECT_REPLY {
            break;
        }
    }
    Err(Error::VsockRefused {
        port,
        reply: String::from_utf8_lossy(&line).into_owned(),
    })
}

/// Sends our `Hello` and checks the agent's answer.
async fn exchange_hello<R, W>(r: &mut R, w: &mut W) -> Result<Hello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    write_frame_async(w, &Frame::Hello(Hello::new(Some(host_name()))))
        .await
        .map_err(|e| Error::Handshake(format!("sending Hello: {e}")))?;
    let frame = read_frame_async(r)
        .await
        .map_err(|e| Error::Handshake(format!("reading the agent's Hello: {e}")))?;
    match frame {
        Some(Frame::Hello(h)) => {
            if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&h.version) {
                Ok(h)
            } else {
                Err(Error::UnsupportedVersion(format!(
                    "agent chose version {} (it speaks {}..={}), we speak {}..={}",
                    h.version, h.min_version, h.version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
                )))
            }
        }
        Some(Frame::Error(body)) if body.code == ErrorCode::UnsupportedVersion => {
            Err(Error::UnsupportedVersion(body.message))
        }
        Some(Frame::Error(body)) => Err(Error::Handshake(body.to_string())),
        Some(other) => Err(Error::Handshake(format!(
            "expected Hello, got a {:?} frame",
            other.kind()
        ))),
        None => Err(Error::Handshake("agent closed the connection".into())),
    }
}

fn host_name() -> String {
    format!("cocoon-runtime {}", env!("CARGO_PKG_VERSION"))
}

async fn read_loop<R: AsyncRead + Unpin>(mut r: R, shared: Arc<Shared>) {
    let reason = loop {
        match read_frame_async(&mut r).await {
            Ok(Some(frame)) => {
                if let Err(reason) = shared.dispatch(frame) {
                    tracing::warn!(%reason, "agent broke the protocol; closing");
                    break reason;
                }
            }
            Ok(None) => break "agent closed the connection".to_string(),
            Err(e) => break format!("reading from the agent: {e}"),
        }
    };
    shared.disconnect(reason);
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Coalesce what is already queued into one write.
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let res = async {
            w.write_all(&batch).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            shared.disconnect(format!("writing to the agent: {e}"));
            return;
        }
    }
}
