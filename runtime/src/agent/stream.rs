//! Byte streams to and from the agent: process stdio and file copies.
//!
//! An [`InputStream`] sends `Data` frames no faster than the agent grants
//! credit; an [`OutputStream`] returns credit only as its user takes the
//! bytes, so at most one window per stream is ever buffered on the host.
//! Dropping either end closes the stream towards the agent.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use cocoon_proto::{Frame, Response};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::client::{AgentClient, PendingCall, Reserve};
use super::{Error, Result};

/// Largest `Data` frame this side sends, so that streams sharing the
/// connection interleave in small steps.
pub const CHUNK: usize = 64 * 1024;

/// What the reader task hands to an [`OutputStream`].
pub(super) enum Chunk {
    Data(Bytes),
    /// The connection was lost before the stream ended.
    Lost,
}

/// A stream towards the agent (a process's stdin, a `copy_in` source).
#[derive(Debug)]
pub struct InputStream {
    client: AgentClient,
    id: u32,
    closed: bool,
}

impl InputStream {
    pub(super) fn open(client: AgentClient) -> Result<Self> {
        let id = client.shared().open_outbound()?;
        Ok(InputStream {
            client,
            id,
            closed: false,
        })
    }

    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Waits for credit for up to `want` bytes (at most [`CHUNK`]).
    async fn reserve(&self, want: usize) -> Result<usize> {
        loop {
            match self.client.shared().reserve(self.id, want.min(CHUNK))? {
                Reserve::Granted(n) => return Ok(n),
                // notify_one stores a permit, so a grant between the check
                // and this await is not lost.
                Reserve::Wait(notify) => notify.notified().await,
            }
        }
    }

    /// Sends all of `data`, waiting for credit as needed. Cancelling it
    /// may leave a prefix of `data` sent.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Like [`write_all`](Self::write_all) for an owned buffer.
    pub async fn write_bytes(&mut self, mut data: Bytes) -> Result<()> {
        if self.closed {
            return Err(Error::StreamClosed(self.id));
        }
        while !data.is_empty() {
            let n = self.reserve(data.len()).await?;
            let chunk = data.split_to(n);
            self.client.shared().send(&Frame::Data {
                stream: self.id,
                data: chunk,
            })?;
        }
        Ok(())
    }

    /// Sends everything `source` yields; returns the byte count. Does not
    /// close the stream.
    pub async fn copy_from<R: AsyncRead + Unpin>(&mut self, source: &mut R) -> Result<u64> {
        let mut total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                return Ok(total);
            }
            self.write_all(&buf[..n]).await?;
            total += n as u64;
        }
    }

    /// Ends the stream: the reader in the guest sees end of file.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.client.shared().close_outbound(self.id)
    }
}

impl Drop for InputStream {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.client.shared().close_outbound(self.id);
        }
    }
}

/// A stream from the agent (a process's stdout or stderr, `copy_out`).
///
/// Read it with [`next_chunk`](Self::next_chunk) or as a tokio
/// [`AsyncRead`]. Credit goes back to the agent as bytes are taken, so not
/// reading it makes the agent (and the process writing) wait.
#[derive(Debug)]
pub struct OutputStream {
    client: AgentClient,
    id: u32,
    rx: mpsc::UnboundedReceiver<Chunk>,
    /// Bytes taken from `rx` but not yet copied out by `poll_read`.
    leftover: Bytes,
    /// The answer that ends the stream (`copy_out`), not yet received.
    completion: Option<PendingCall>,
    finished: bool,
}

impl OutputStream {
    pub(super) fn open(client: AgentClient, completion: Option<PendingCall>) -> Result<Self> {
        let (id, rx) = client.shared().open_inbound()?;
        Ok(OutputStream {
            client,
            id,
            rx,
            leftover: Bytes::new(),
            completion,
            finished: false,
        })
    }

    pub(super) fn set_completion(&mut self, call: PendingCall) {
        self.completion = Some(call);
    }

    /// The stream id on the wire.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next bytes, or `Ok(None)` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.leftover.is_empty() {
            return Ok(Some(std::mem::take(&mut self.leftover)));
        }
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the whole stream into memory. Only for output known to be
    /// small; it removes the back-pressure that protects the host.
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(b) = self.next_chunk().await? {
            v.extend_from_slice(&b);
        }
        Ok(v)
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>>> {
        if self.finished {
            return Poll::Ready(Ok(None));
        }
        // An early failure answer ends the stream at once.
        if let Some(call) = &mut self.completion {
            if let Poll::Ready(r) = call.poll_recv(cx) {
                self.completion = None;
                if let Err(e) = check_done(r) {
                    self.finish();
                    return Poll::Ready(Err(e));
                }
            }
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(Chunk::Data(b)) => {
                self.client.shared().consumed(self.id, b.len());
                Poll::Ready(Ok(Some(b)))
            }
            Some(Chunk::Lost) => {
                self.finish();
                Poll::Ready(Err(Error::Disconnected))
            }
            None => {
                // The agent closed the stream; with a pending answer, the
                // stream ends only once it says the transfer succeeded.
                if let Some(call) = &mut self.completion {
                    let r = ready!(call.poll_recv(cx));
                    self.completion = None;
                    self.finish();
                    return Poll::Ready(check_done(r).map(|()| None));
                }
                self.finish();
                Poll::Ready(Ok(None))
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.client.shared().close_inbound(self.id);
    }
}

fn check_done(r: Result<Response>) -> Result<()> {
    match r? {
        Response::Done => Ok(()),
        other => Err(Error::Protocol(format!(
            "unexpected answer to copy_out: {other:?}"
        ))),
    }
}

impl AsyncRead for OutputStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.leftover.is_empty() {
            match ready!(this.poll_chunk(cx)) {
                Ok(Some(b)) => this.leftover = b,
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(std::io::Error::other(e))),
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if !self.finished {
            // Tell the agent to stop; data already in flight is dropped.
            self.client.shared().close_inbound(self.id);
        }
    }
}
