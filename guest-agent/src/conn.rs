//! One host connection: the frame writer shared by every thread that
//! answers, and the per-stream flow-control state. Outbound streams (stdout,
//! stderr, copy-out) are pumped by a thread each that sends only as much as
//! the host has granted; inbound streams (stdin, copy-in) are written by a
//! thread each that grants credit back as it drains, so neither side can
//! make the other buffer more than one window per stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cocoon_proto::{write_frame, ErrorBody, Frame, RecvWindow, Response, SendWindow};

/// Largest Data frame the agent sends.
pub const CHUNK: usize = 64 * 1024;

struct OutStream {
    window: SendWindow,
    peer_closed: bool,
}

struct InStream {
    tx: mpsc::Sender<Bytes>,
    window: RecvWindow,
}

#[derive(Default)]
struct Streams {
    out: HashMap<u32, OutStream>,
    inp: HashMap<u32, InStream>,
}

/// What [`Conn::wait_credit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credit {
    /// This many bytes may be sent.
    Bytes(usize),
    /// The stream or the connection is gone.
    Closed,
    /// No credit yet.
    Later,
}

/// Called once when an inbound or outbound stream ends: Ok(bytes moved).
pub type OnFinish = Box<dyn FnOnce(std::io::Result<u64>) + Send>;

/// The agent's side of one host connection.
pub struct Conn {
    writer: Mutex<File>,
    streams: Mutex<Streams>,
    credit: Condvar,
    dead: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Wraps the write half of an accepted connection.
    pub fn new(writer: File) -> Arc<Conn> {
        Arc::new(Conn {
            writer: Mutex::new(writer),
            streams: Mutex::new(Streams::default()),
            credit: Condvar::new(),
            dead: AtomicBool::new(false),
        })
    }

    /// Sends one frame; a failed write marks the connection dead.
    pub fn send(&self, frame: &Frame) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let mut w = lock(&self.writer);
        if write_frame(&mut *w, frame).is_err() {
            self.mark_dead();
            return false;
        }
        true
    }

    /// Answers request `id`.
    pub fn respond(&self, id: u32, result: Result<Response, ErrorBody>) {
        self.send(&Frame::Response { id, result });
    }

    /// Ends every stream: the reader saw EOF or a protocol error.
    pub fn mark_dead(&self) {
        self.dead.store(true, Ordering::Relaxed);
        let mut st = lock(&self.streams);
        st.inp.clear();
        for o in st.out.values_mut() {
            o.peer_closed = true;
        }
        drop(st);
        self.credit.notify_all();
    }

    /// Whether the connection is gone.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Registers `stream` as an outbound stream of this connection (for
    /// senders that do not use [`Conn::pump_out`]); false if it is taken or
    /// the connection is gone.
    pub fn open_out(&self, stream: u32) -> bool {
        let mut st = lock(&self.streams);
        if self.is_dead() || st.out.contains_key(&stream) || st.inp.contains_key(&stream) {
            return false;
        }
        st.out.insert(
            stream,
            OutStream {
                window: SendWindow::new(),
                peer_closed: false,
            },
        );
        true
    }

    /// Waits up to `limit` for the host to allow sending on `stream`.
    pub fn wait_credit(&self, stream: u32, limit: Duration) -> Credit {
        let deadline = Instant::now() + limit;
        let mut st = lock(&self.streams);
        loop {
            match st.out.get(&stream) {
                None => return Credit::Closed,
                Some(o) if o.peer_closed => return Credit::Closed,
                Some(o) if o.window.available() > 0 => {
                    return Credit::Bytes(o.window.available() as usize)
                }
                Some(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Credit::Later;
                    }
                    st = match self.credit.wait_timeout(st, deadline - now) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
            }
        }
    }

    /// Sends `data` on `stream`, which must fit the credit
    /// [`Conn::wait_credit`] reported. False when the stream or the
    /// connection is gone (the data may not have arrived).
    pub fn send_data(&self, stream: u32, data: Bytes) -> bool {
        match lock(&self.streams).out.get_mut(&stream) {
            Some(o) if !o.peer_closed => {
                o.window.take(data.len());
            }
            _ => return false,
        }
        self.send(&Frame::Data { stream, data })
    }

    /// Ends an outbound stream opened with [`Conn::open_out`]: Close is
    /// sent unless the host closed it first.
    pub fn close_out(&self, stream: u32) {
        let was_open = lock(&self.streams)
            .out
            .remove(&stream)
            .is_some_and(|o| !o.peer_closed);
        if was_open {
            self.send(&Frame::Close { stream });
        }
    }

    /// Whether `stream` is already in use in either direction.
    pub fn stream_in_use(&self, stream: u32) -> bool {
        let st = lock(&self.streams);
        st.out.contains_key(&stream) || st.inp.contains_key(&stream)
    }

    /// Handles a stream frame from the host. Returns false on a flow
    /// control violation (the caller drops the connection).
    pub fn on_stream_frame(&self, frame: Frame) -> bool {
        match frame {
            Frame::Data { stream, data } => {
                let mut st = lock(&self.streams);
                if let Some(s) = st.inp.get_mut(&stream) {
                    if s.window.on_data(data.len()).is_err() {
                        return false;
                    }
                    let _ = s.tx.send(data);
                }
                true
            }
            Frame::Close { stream } => {
                let mut st = lock(&self.streams);
                st.inp.remove(&stream);
                if let Some(o) = st.out.get_mut(&stream) {
                    o.peer_closed = true;
                }
                drop(st);
                self.credit.notify_all();
                true
            }
            Frame::Credit { stream, bytes } => {
                let mut st = lock(&self.streams);
                if let Some(o) = st.out.get_mut(&stream) {
                    if o.window.grant(bytes).is_err() {
                        return false;
                    }
                }
                drop(st);
                self.credit.notify_all();
                true
            }
            _ => true,
        }
    }

    /// Sends everything read from `src` on `stream`, then Close.
    pub fn pump_out(self: &Arc<Self>, stream: u32, mut src: File, on_finish: Option<OnFinish>) {
        lock(&self.streams).out.insert(
            stream,
            OutStream {
                window: SendWindow::new(),
                peer_closed: false,
            },
        );
        let conn = self.clone();
        let run = move || {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            let result = loop {
                let avail = {
                    let mut st = lock(&conn.streams);
                    loop {
                        match st.out.get(&stream) {
                            None => break 0,
                            Some(o) if o.peer_closed => break 0,
                            Some(o) if o.window.available() > 0 => {
                                break o.window.available() as usize
                            }
                            Some(_) => st = conn.credit.wait(st).unwrap_or_else(|e| e.into_inner()),
                        }
                    }
                };
                if avail == 0 {
                    break Ok(total);
                }
                let want = avail.min(CHUNK);
                let n = match src.read(&mut buf[..want]) {
                    Ok(0) => break Ok(total),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A pty whose last slave holder exited reads EIO: that is its EOF.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => break Ok(total),
                    Err(e) => break Err(e),
                };
                if let Some(o) = lock(&conn.streams).out.get_mut(&stream) {
                    o.window.take(n);
                }
                total += n as u64;
                if !conn.send(&Frame::Data {
                    stream,
                    data: Bytes::copy_from_slice(&buf[..n]),
                }) {
                    break Ok(total);
                }
            };
            let was_open = lock(&conn.streams)
                .out
                .remove(&stream)
                .is_some_and(|o| !o.peer_closed);
            if was_open {
                conn.send(&Frame::Close { stream });
            }
            drop(src);
            if let Some(f) = on_finish {
                f(result);
            }
        };
        spawn_named("out", run);
    }

    /// Writes what the host sends on `stream` into `dst` until the host
    /// closes it; grants credit as it drains.
    pub fn pump_in(self: &Arc<Self>, stream: u32, mut dst: File, on_finish: Option<OnFinish>) {
        let (tx, rx) = mpsc::channel::<Bytes>();
        lock(&self.streams).inp.insert(
            stream,
            InStream {
                tx,
                window: RecvWindow::new(),
            },
        );
        let conn = self.clone();
        let run = move || {
            let mut total = 0u64;
            let mut failed = None;
            for chunk in rx {
                if failed.is_some() {
                    continue;
                }
                if let Err(e) = dst.write_all(&chunk) {
                    // The process closed its stdin (or the file failed):
                    // tell the host to stop sending.
                    lock(&conn.streams).inp.remove(&stream);
                    conn.send(&Frame::Close { stream });
                    failed = Some(e);
                    continue;
                }
                total += chunk.len() as u64;
                let credit = lock(&conn.streams)
                    .inp
                    .get_mut(&stream)
                    .and_then(|s| s.window.on_consumed(chunk.len()));
                if let Some(bytes) = credit {
                    conn.send(&Frame::Credit { stream, bytes });
                }
            }
            let result = match failed {
                Some(e) => Err(e),
                None => dst.flush().map(|_| total),
            };
            drop(dst);
            if let Some(f) = on_finish {
                f(result);
            }
        };
        spawn_named("in", run);
    }
}

/// Starts a detached helper thread; a failure to start one is logged.
pub fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(format!("agent-{name}"))
        .stack_size(256 * 1024)
        .spawn(f)
    {
        crate::log(&format!("cannot start a {name} thread: {e}"));
    }
}
