//! Processes with their stdio streamed, for interactive use: a
//! [`ProcessIo`] is a set of bounded channels (stdin in, output out,
//! control in, the exit at the end) that a front end (the daemon's
//! WebSocket route) drives, whatever is behind it: an exec'd process
//! ([`drive_exec`]) or a sandbox's init, attached through its log
//! ([`follow_log`]).
//!
//! Every channel is bounded, so a client that stops reading stops the
//! process (through the agent's stream credit, or by leaving the log
//! unread) instead of growing the daemon's memory. The output channel
//! closes only after all of the process's output went into it, and the exit
//! comes after that. Nothing here parses client input: that is the front
//! end's job.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::logs::{LogReader, LogStream};
use super::record::{ExitInfo, SandboxState};
use super::CONTAINER_ID;
use crate::agent::{AgentClient, ExecHandle, InputStream, OutputStream};

/// Chunks queued towards the process's stdin.
pub const STDIN_QUEUE: usize = 4;
/// Chunks queued towards the client.
pub const OUTPUT_QUEUE: usize = 4;
/// Largest chunk read from a log at a time.
pub const LOG_CHUNK: usize = 64 * 1024;
/// After the process exited, how long its output may stay silent before it
/// is taken as ended (a background child may hold the pipe open forever).
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Bytes a process wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// On which stream (stdout for a terminal's output).
    pub stream: LogStream,
    /// The bytes.
    pub data: Bytes,
}

/// A request about a running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Set its terminal's size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Send it a signal.
    Signal(i32),
}

/// How the process ended: its exit, or why there is none (the sandbox was
/// stopped or failed, the agent was lost).
pub type Ending = Result<ExitInfo, String>;

/// The streams of a running process. Dropping `stdin` closes the
/// process's stdin (it reads end of file); dropping `output` closes its
/// output streams; dropping everything detaches without stopping it.
#[derive(Debug)]
pub struct ProcessIo {
    /// Its stdin, when it has one.
    pub stdin: Option<mpsc::Sender<Bytes>>,
    /// Its output, in order; closed once all of it went through.
    pub output: mpsc::Receiver<OutputChunk>,
    /// Resize and signal requests (failures are logged, not returned).
    pub control: mpsc::Sender<Control>,
    /// How it ended; answered after `output` closed.
    pub exit: oneshot::Receiver<Ending>,
}

/// The other ends of a [`ProcessIo`]'s channels, for whatever runs the
/// process (the runtime, or a test's fake).
#[derive(Debug)]
pub struct ProcessEnds {
    /// Chunks for stdin, when asked for.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where output goes.
    pub output: mpsc::Sender<OutputChunk>,
    /// Requests from the client.
    pub control: mpsc::Receiver<Control>,
    /// Where the ending goes.
    pub exit: oneshot::Sender<Ending>,
}

/// A connected pair of channel ends, with a stdin channel if `stdin`.
pub fn channels(stdin: bool) -> (ProcessIo, ProcessEnds) {
    let (stdin_tx, stdin_rx) = match stdin {
        true => {
            let (tx, rx) = mpsc::channel(STDIN_QUEUE);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let (ctl_tx, ctl_rx) = mpsc::channel(8);
    let (exit_tx, exit_rx) = oneshot::channel();
    (
        ProcessIo {
            stdin: stdin_tx,
            output: out_rx,
            control: ctl_tx,
            exit: exit_rx,
        },
        ProcessEnds {
            stdin: stdin_rx,
            output: out_tx,
            control: ctl_rx,
            exit: exit_tx,
        },
    )
}

/// Feeds a process's stdin from its channel; closes it when the channel
/// closes (or the process stops reading).
pub(super) fn spawn_stdin(mut rx: mpsc::Receiver<Bytes>, mut stdin: InputStream) {
    tokio::spawn(
        async move {
            while let Some(data) = rx.recv().await {
                if let Err(e) = stdin.write_bytes(data).await {
                    tracing::debug!("stdin closed: {e}");
                    return;
                }
            }
            let _ = stdin.close();
        }
        .instrument(tracing::Span::current()),
    );
}

/// Runs an exec'd process's streams until it exits and its output is
/// drained, then reports its exit.
pub(super) fn drive_exec(client: AgentClient, mut handle: ExecHandle, ends: ProcessEnds) {
    let ProcessEnds {
        stdin,
        output,
        mut control,
        exit,
    } = ends;
    if let (Some(rx), Some(s)) = (stdin, handle.take_stdin()) {
        spawn_stdin(rx, s);
    }
    let (exited_tx, exited_rx) = watch::channel(false);
    let pumps: Vec<JoinHandle<()>> = [
        (handle.take_stdout(), LogStream::Stdout),
        (handle.take_stderr(), LogStream::Stderr),
    ]
    .into_iter()
    .filter_map(|(s, which)| {
        s.map(|s| {
            tokio::spawn(
                pump_output(s, which, output.clone(), exited_rx.clone())
                    .instrument(tracing::Span::current()),
            )
        })
    })
    .collect();
    drop(output);
    tokio::spawn(
        async move {
            let status = {
                let wait = handle.wait();
                tokio::pin!(wait);
                let mut control_open = true;
                loop {
                    tokio::select! {
                        r = &mut wait => break r,
                        c = control.recv(), if control_open => match c {
                            Some(c) => apply_control(&client, handle.exec_id(), c).await,
                            None => control_open = false,
                        },
                    }
                }
            };
            let _ = exited_tx.send(true);
            for p in pumps {
                let _ = p.await;
            }
            let _ = exit.send(
                status
                    .map(ExitInfo::from)
                    .map_err(|e| format!("lost the process: {e}")),
            );
        }
        .instrument(tracing::Span::current()),
    );
}

/// Applies a resize or signal to process `exec_id` of the sandbox's
/// container; a failure (the process is gone, it has no terminal) is only
/// logged.
pub(super) async fn apply_control(client: &AgentClient, exec_id: &str, c: Control) {
    let r = match c {
        Control::Resize { rows, cols } => {
            client.resize_tty(CONTAINER_ID, exec_id, rows, cols).await
        }
        Control::Signal(n) => client.signal(CONTAINER_ID, exec_id, n).await,
    };
    if let Err(e) = r {
        tracing::debug!("{c:?}: {e}");
    }
}

/// Moves one output stream into the channel. Once `exited` is set, a
/// stream silent for [`DRAIN_IDLE`] is taken as ended; waiting for the
/// client to take a chunk has no limit.
async fn pump_output(
    mut stream: OutputStream,
    which: LogStream,
    tx: mpsc::Sender<OutputChunk>,
    mut exited: watch::Receiver<bool>,
) {
    loop {
        let next = if *exited.borrow() {
            match tokio::time::timeout(DRAIN_IDLE, stream.next_chunk()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("{which:?} still open after the exit; not waiting for it");
                    return;
                }
            }
        } else {
            tokio::select! {
                r = stream.next_chunk() => r,
                // next_chunk is cancel-safe: nothing is lost by going round.
                _ = exited.changed() => continue,
            }
        };
        match next {
            Ok(Some(data)) => {
                let chunk = OutputChunk {
                    stream: which,
                    data,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("{which:?} ended: {e}");
                return;
            }
        }
    }
}

/// Copies a log into `tx` as it grows: records already there, then each
/// append as `appended` announces it, until the sandbox is in a final
/// `state` and the log has been read to its end, or the receiver is
/// dropped.
pub(super) async fn follow_log(
    mut reader: LogReader,
    tx: mpsc::Sender<OutputChunk>,
    mut appended: watch::Receiver<()>,
    mut state: watch::Receiver<SandboxState>,
) {
    loop {
        // Mark both seen before reading: a change after this wakes us.
        appended.borrow_and_update();
        let done = state.borrow_and_update().is_final();
        let read = tokio::task::spawn_blocking(move || {
            let chunks = reader.read(LOG_CHUNK);
            (reader, chunks)
        })
        .await;
        let chunks = match read {
            Ok((r, Ok(chunks))) => {
                reader = r;
                chunks
            }
            Ok((_, Err(e))) => {
                tracing::warn!("reading the log: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!("log reader task: {e}");
                return;
            }
        };
        let Some(chunks) = chunks else {
            // At the end of the log: done, or wait for more.
            if done {
                return;
            }
            tokio::select! {
                r = appended.changed() => if r.is_err() { return },
                r = state.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
            continue;
        };
        for (stream, data) in chunks {
            if tx.send(OutputChunk { stream, data }).await.is_err() {
                return;
            }
        }
    }
}
