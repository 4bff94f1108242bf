//! The streaming protocol of `GET /v1/sandboxes/{id}/exec/ws` and
//! `/attach/ws`, and the daemon's end of it: a WebSocket carrying a
//! process's stdio both ways.
//!
//! - Binary messages are stdio: one byte of stream (0 stdin, from the
//!   client; 1 stdout and 2 stderr, from the daemon, as in the sandbox log)
//!   then the bytes.
//! - Text messages are JSON objects with a `type`
//!   ([`ClientMessage`], [`ServerMessage`]): from the client `start` (the
//!   process, first on `/exec/ws`), `resize`, `signal`, `close_stdin`; from
//!   the daemon `exit` (after all output) or `error`, then the daemon
//!   closes the connection.
//!
//! Back-pressure holds both ways: output is sent one message at a time,
//! each waiting until the socket took it, so a client that does not read
//! stops the process; stdin is taken from the socket only while at most
//! [`MAX_PENDING_STDIN`] bytes wait for the process, and control messages
//! behind them still get through.

use std::collections::VecDeque;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use cocoon_runtime::sandbox::{Control, ExecStreamSpec, OutputChunk, ProcessIo};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::types::{ClientMessage, ErrorDetail, ServerMessage};

/// Stream byte of stdin data (client to daemon).
pub const STDIN: u8 = 0;
/// Stream byte of stdout data (daemon to client).
pub const STDOUT: u8 = 1;
/// Stream byte of stderr data (daemon to client).
pub const STDERR: u8 = 2;
/// Largest message the daemon accepts.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Most stdin bytes read from the socket but not yet taken by the process.
pub const MAX_PENDING_STDIN: usize = 1 << 20;
/// How long the daemon waits for the `start` message.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// WebSocket close code for a normal end.
const CLOSE_NORMAL: u16 = 1000;
/// Hang-up signal sent to a terminal process whose client went away.
const SIGHUP: i32 = 1;

/// A binary message: the stream byte, then `data`.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + data.len());
    b.put_u8(stream);
    b.extend_from_slice(data);
    b.freeze()
}

/// Reads the `start` message that opens `/exec/ws`.
pub async fn read_start(socket: &mut WebSocket) -> Result<ExecStreamSpec, ApiError> {
    loop {
        let msg = tokio::time::timeout(START_TIMEOUT, socket.recv())
            .await
            .map_err(|_| ApiError::invalid("no start message within 60 s"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                return match serde_json::from_str::<ClientMessage>(t.as_str()) {
                    Ok(ClientMessage::Start(spec)) => Ok(spec),
                    Ok(_) => Err(ApiError::invalid("the first message must be start")),
                    Err(e) => Err(ApiError::invalid(format!("invalid start message: {e}"))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err(ApiError::invalid("the first message must be start")),
            // The client went away: nothing to answer.
            Some(Err(_)) | None => return Err(ApiError::invalid("connection closed")),
        }
    }
}

/// Sends `error` and closes.
pub async fn fail(mut socket: WebSocket, e: ApiError) {
    if e.status.is_server_error() {
        tracing::error!(code = e.code, "{}", e.message);
    }
    let _ = socket.send(error_message(e)).await;
    let _ = socket.send(close()).await;
}

fn close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CLOSE_NORMAL,
        reason: "".into(),
    }))
}

fn error_message(e: ApiError) -> Message {
    text(&ServerMessage::Error(ErrorDetail {
        code: e.code.to_string(),
        message: e.message,
        sandbox_id: e.sandbox_id,
    }))
}

fn text(m: &ServerMessage) -> Message {
    // Serialising these plain types cannot fail.
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

/// How a session ended.
enum End {
    /// The process ended and `exit` (or `error`) was sent, or the socket
    /// failed while sending.
    Done,
    /// The client went away.
    Gone,
    /// The client broke the protocol.
    Broke(ApiError),
}

/// Runs a session until the process ended and its exit was sent, or the
/// client went away or broke the protocol. With `hangup`, a client that
/// leaves early makes the process get SIGHUP (a terminal closing).
pub async fn serve(socket: WebSocket, io: ProcessIo, hangup: bool) {
    let ProcessIo {
        stdin,
        output,
        control,
        exit,
    } = io;
    let (mut sink, mut source) = socket.split();
    let end = {
        let out = send_output(&mut sink, output, exit);
        let input = read_input(&mut source, stdin, &control);
        tokio::select! {
            () = out => End::Done,
            r = input => match r {
                Ok(()) => End::Gone,
                Err(e) => End::Broke(e),
            },
        }
    };
    if hangup && !matches!(end, End::Done) {
        let _ = control.try_send(Control::Signal(SIGHUP));
    }
    if let End::Broke(e) = end {
        let _ = sink.send(error_message(e)).await;
    }
    let _ = sink.send(close()).await;
}

/// Sends output as it comes, then the exit.
async fn send_output<S>(
    sink: &mut S,
    mut output: mpsc::Receiver<OutputChunk>,
    exit: oneshot::Receiver<cocoon_runtime::sandbox::Ending>,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    while let Some(c) = output.recv().await {
        let msg = Message::Binary(frame(c.stream.tag(), &c.data));
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    let last = match exit.await {
        Ok(Ok(e)) => text(&ServerMessage::Exit(e)),
        Ok(Err(why)) => error_message(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "no_exit_status",
            why,
        )),
        Err(_) => error_message(ApiError::internal(
            "the process's task ended without an exit status",
        )),
    };
    let _ = sink.send(last).await;
}

/// Takes the client's messages: stdin into the process (a bounded queue in
/// front of it), control requests to it. `Ok` when the client left.
async fn read_input<S>(
    source: &mut S,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    control: &mpsc::Sender<Control>,
) -> Result<(), ApiError>
where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut close_after = false;
    loop {
        if pending.is_empty() && close_after {
            stdin = None;
        }
        let target = stdin.clone().filter(|_| !pending.is_empty());
        tokio::select! {
            permit = async { target?.reserve_owned().await.ok() }, if !pending.is_empty() => {
                match (permit, pending.pop_front()) {
                    (Some(p), Some(b)) => {
                        pending_bytes -= b.len();
                        p.send(b);
                    }
                    // The process closed its stdin: later input is dropped.
                    _ => {
                        stdin = None;
                        pending.clear();
                        pending_bytes = 0;
                    }
                }
            }
            msg = source.next(), if pending_bytes < MAX_PENDING_STDIN => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                match msg {
                    Message::Binary(b) => match b.split_first() {
                        Some((&STDIN, data)) => {
                            if stdin.is_some() && !close_after && !data.is_empty() {
                                pending_bytes += data.len();
                                pending.push_back(b.slice(1..));
                            }
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                "a binary message from the client is stream 0 (stdin) and its bytes",
                            ))
                        }
                    },
                    Message::Text(t) => match serde_json::from_str::<ClientMessage>(t.as_str()) {
                        Ok(ClientMessage::Resize { rows, cols }) => {
                            let _ = control.send(Control::Resize { rows, cols }).await;
                        }
                        Ok(ClientMessage::Signal { signal }) if (1..=64).contains(&signal) => {
                            let _ = control.send(Control::Signal(signal)).await;
                        }
                        Ok(ClientMessage::Signal { signal }) => {
                            return Err(ApiError::invalid(format!(
                                "signal: {signal} is not 1 to 64"
                            )))
                        }
                        Ok(ClientMessage::CloseStdin) => close_after = true,
                        Ok(ClientMessage::Start(_)) => {
                            return Err(ApiError::invalid("start comes once, first, on exec/ws"))
                        }
                        Err(e) => return Err(ApiError::invalid(format!("invalid message: {e}"))),
                    },
                    Message::Close(_) => return Ok(()),
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            else => return Ok(()),
        }
    }
}
