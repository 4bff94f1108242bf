//! The CLI's end of a streaming session (`cocoon exec`, `cocoon run`): the
//! local stdin goes to the process, its output to the local stdout and
//! stderr, signals the CLI gets are forwarded (Docker's sig-proxy), and
//! with a terminal the local one is put in raw mode (restored on the way
//! out) and its size follows the window's (SIGWINCH).
//!
//! It knows nothing of exit codes: [`Outcome`] says how the session ended
//! and the CLI decides.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use bytes::Bytes;
use cocoon_runtime::sandbox::ExitInfo;
use futures_util::{SinkExt, StreamExt};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::stream::{frame, STDERR, STDIN, STDOUT};
use crate::types::{ClientMessage, ErrorDetail, ServerMessage};

/// Signals forwarded to the process (with a terminal, Ctrl-C is a byte
/// sent to it, not a signal here).
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// Bytes read from the local stdin at a time.
const STDIN_CHUNK: usize = 32 * 1024;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited.
    Exit(ExitInfo),
    /// The daemon answered with an error.
    Error(ErrorDetail),
    /// The connection ended without either.
    Lost(String),
}

/// The local terminal in raw mode; dropping it restores the settings.
#[derive(Debug)]
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; `None` when stdin is not one.
    pub fn enter() -> std::io::Result<Option<RawTerminal>> {
        let stdin = std::io::stdin();
        if !termios::isatty(stdin.as_fd()) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Some(RawTerminal { saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The local terminal's size (of stdout's, else stdin's): (rows, cols).
pub fn terminal_size() -> Option<(u16, u16)> {
    let out = termios::tcgetwinsize(std::io::stdout().as_fd());
    let ws = out.or_else(|_| termios::tcgetwinsize(std::io::stdin().as_fd()));
    ws.ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| (w.ws_row, w.ws_col))
}

/// Reads the local stdin on a thread of its own (a blocking read must not
/// hold the runtime, nor its shutdown); the bounded channel is the
/// back-pressure. The channel closes at end of file.
fn spawn_stdin_reader() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Forwards the signals the CLI gets into a channel (with `tty`, SIGWINCH
/// too: it becomes a resize).
fn spawn_signal_forwarders(tty: bool) -> std::io::Result<mpsc::UnboundedReceiver<i32>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut kinds: Vec<i32> = FORWARDED.to_vec();
    if tty {
        kinds.push(libc::SIGWINCH);
    }
    for n in kinds {
        // Registering here, before anything is sent, so a signal from now
        // on is forwarded instead of killing the CLI.
        let mut s = signal(SignalKind::from_raw(n))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

fn text(m: &ClientMessage) -> Message {
    // Serialising these plain types cannot fail.
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

/// Runs a session on `ws`: sends `start` first if given (exec), forwards
/// stdin when `stdin`, treats the process as on a terminal when `tty`.
/// Returns once the daemon closed the connection.
pub async fn run(
    ws: WebSocketStream<UnixStream>,
    start: Option<ClientMessage>,
    stdin: bool,
    tty: bool,
) -> Outcome {
    let signals = match spawn_signal_forwarders(tty) {
        Ok(s) => s,
        Err(e) => return Outcome::Lost(format!("setting up signal handlers: {e}")),
    };
    let raw = match tty {
        true => match RawTerminal::enter() {
            Ok(r) => r,
            Err(e) => return Outcome::Lost(format!("putting the terminal in raw mode: {e}")),
        },
        false => None,
    };
    let outcome = session(ws, start, stdin, tty, signals).await;
    drop(raw);
    outcome
}

async fn session(
    ws: WebSocketStream<UnixStream>,
    start: Option<ClientMessage>,
    stdin: bool,
    tty: bool,
    signals: mpsc::UnboundedReceiver<i32>,
) -> Outcome {
    let (mut sink, source) = ws.split();
    let mut first = Vec::new();
    first.extend(start);
    if let (true, Some((rows, cols))) = (tty, terminal_size()) {
        first.push(ClientMessage::Resize { rows, cols });
    }
    for m in first {
        if let Err(e) = sink.send(text(&m)).await {
            return Outcome::Lost(format!("sending to cocoond: {e}"));
        }
    }
    let input = stdin.then(spawn_stdin_reader);
    // Sending and receiving apart: a send held up by a process that does
    // not read its stdin must not stop its output from being read.
    tokio::select! {
        outcome = receive(source) => outcome,
        () = send(sink, input, signals) => {
            Outcome::Lost("cocoond stopped taking messages".into())
        }
    }
}

/// Sends stdin (then `close_stdin` at its end) and forwarded signals until
/// the connection fails.
async fn send<S>(
    mut sink: S,
    mut input: Option<mpsc::Receiver<Bytes>>,
    mut signals: mpsc::UnboundedReceiver<i32>,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    loop {
        let msg = tokio::select! {
            data = async { input.as_mut()?.recv().await }, if input.is_some() => match data {
                Some(d) => Message::Binary(frame(STDIN, &d)),
                None => {
                    input = None;
                    text(&ClientMessage::CloseStdin)
                }
            },
            Some(n) = signals.recv() => match (n, terminal_size()) {
                (libc::SIGWINCH, Some((rows, cols))) => text(&ClientMessage::Resize { rows, cols }),
                (libc::SIGWINCH, None) => continue,
                (n, _) => text(&ClientMessage::Signal { signal: n }),
            },
            else => std::future::pending().await,
        };
        if sink.send(msg).await.is_err() {
            // The daemon is gone; what it sent last is read on the other side.
            return std::future::pending().await;
        }
    }
}

/// Writes output to the local stdout and stderr until the daemon closes
/// the connection; returns how the process ended.
async fn receive<S>(mut source: S) -> Outcome
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut outcome = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(msg) = source.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                return outcome
                    .unwrap_or_else(|| Outcome::Lost(format!("connection to cocoond: {e}")))
            }
        };
        match msg {
            Message::Binary(b) => {
                let (out, data): (&mut dyn Write, &[u8]) = match b.split_first() {
                    Some((&STDOUT, d)) => (&mut stdout, d),
                    Some((&STDERR, d)) => (&mut stderr, d),
                    _ => continue,
                };
                // A closed local stdout is not a reason to stop the
                // session (the process's exit still counts).
                let _ = out.write_all(data).and_then(|()| out.flush());
            }
            Message::Text(t) => match serde_json::from_str::<ServerMessage>(t.as_str()) {
                Ok(ServerMessage::Exit(e)) => outcome = Some(Outcome::Exit(e)),
                Ok(ServerMessage::Error(e)) => outcome = Some(Outcome::Error(e)),
                Err(_) => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    outcome.unwrap_or_else(|| {
        Outcome::Lost("cocoond closed the connection without an exit status".into())
    })
}
