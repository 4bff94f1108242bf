//! Output that outlives a host connection. A process started with
//! `keep_output` (the sandbox's init) must not get SIGPIPE when the host
//! daemon restarts: its stdout and stderr are read by a relay thread that
//! sends to whichever connection is attached, and while none is, keeps the
//! last [`KEPT_OUTPUT`] bytes (dropping older ones, so the process never
//! blocks). A new connection takes the output over with `Attach`; what was
//! kept goes first.
//!
//! Bytes sent are not known to be stored: they may be lost with the
//! connection (in the guest's socket, the VMM, or a daemon that stopped
//! before writing them). So the relay also keeps the last [`KEPT_OUTPUT`]
//! bytes it sent and counts every byte sent; an `Attach` that says how many
//! bytes the host has stored gets what was sent past that again first.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cocoon_proto::{ErrorBody, ErrorCode, KEPT_OUTPUT};

use crate::conn::{spawn_named, Conn, Credit, CHUNK};

/// How often a waiting relay looks again (for a new connection, credit, or
/// output).
const TICK: Duration = Duration::from_millis(200);

/// The bytes kept while no host is attached: a queue of chunks holding at
/// most `cap` bytes, the oldest dropped first.
#[derive(Debug)]
pub struct Kept {
    chunks: VecDeque<Bytes>,
    len: usize,
    cap: usize,
    dropped: u64,
}

impl Kept {
    /// An empty queue of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Kept {
            chunks: VecDeque::new(),
            len: 0,
            cap,
            dropped: 0,
        }
    }

    /// Appends `b`, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, mut b: Bytes) {
        if b.len() > self.cap {
            self.dropped += (b.len() - self.cap) as u64;
            b = b.slice(b.len() - self.cap..);
        }
        self.len += b.len();
        self.chunks.push_back(b);
        while self.len > self.cap {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let over = self.len - self.cap;
            if front.len() <= over {
                self.len -= front.len();
                self.dropped += front.len() as u64;
                self.chunks.pop_front();
            } else {
                *front = front.slice(over..);
                self.len -= over;
                self.dropped += over as u64;
            }
        }
    }

    /// Puts back bytes taken with [`Kept::take`] that could not be sent.
    pub fn unget(&mut self, b: Bytes) {
        self.len += b.len();
        self.chunks.push_front(b);
    }

    /// Takes up to `max` of the oldest bytes.
    pub fn take(&mut self, max: usize) -> Option<Bytes> {
        let front = self.chunks.front_mut()?;
        let b = if front.len() <= max {
            self.chunks.pop_front()?
        } else {
            front.split_to(max)
        };
        self.len -= b.len();
        Some(b)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Takes the newest `n` bytes (all if fewer), oldest first.
    pub fn take_newest(&mut self, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut left = n.min(self.len);
        while left > 0 {
            let Some(back) = self.chunks.back_mut() else {
                break;
            };
            let b = if back.len() <= left {
                match self.chunks.pop_back() {
                    Some(b) => b,
                    None => break,
                }
            } else {
                back.split_off(back.len() - left)
            };
            left -= b.len();
            self.len -= b.len();
            out.push(b);
        }
        out.reverse();
        out
    }

    /// Bytes dropped because the cap was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

struct Target {
    /// The connection and stream the output goes to.
    to: Option<(Arc<Conn>, u32)>,
    /// Bytes the newly attached host has stored (taken by the relay thread).
    resume: Option<u64>,
    /// Everything was delivered: the relay is gone.
    finished: bool,
}

/// Moves what was sent past `from` (as far as `sent` still holds it) back
/// in front of `kept` to be sent again, and winds `sent_total` back to
/// where that starts. Returns the bytes past `from` no longer held (lost).
/// A `from` past what was sent means nothing is sent again.
pub fn rewind(kept: &mut Kept, sent: &mut Kept, sent_total: &mut u64, from: u64) -> u64 {
    let from = from.min(*sent_total);
    let oldest = *sent_total - sent.len() as u64;
    let start = from.max(oldest);
    let again = sent.take_newest((*sent_total - start) as usize);
    for b in again.into_iter().rev() {
        kept.unget(b);
    }
    *sent_total = start;
    start - from
}

/// One output stream of a `keep_output` process.
pub struct Relay {
    target: Mutex<Target>,
    attached: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Starts relaying `src` to `stream` of `conn` (the stream is
    /// registered here; if that fails the output is kept for a later
    /// attach).
    pub fn start(src: File, conn: &Arc<Conn>, stream: u32) -> Arc<Relay> {
        let to = conn.open_out(stream).then(|| (conn.clone(), stream));
        let relay = Arc::new(Relay {
            target: Mutex::new(Target {
                to,
                resume: None,
                finished: false,
            }),
            attached: Condvar::new(),
        });
        let r = relay.clone();
        spawn_named("relay", move || r.run(src));
        relay
    }

    /// Sends the output to `stream` of `conn` from now on, starting again
    /// after the first `from` bytes sent when the host says it has those.
    pub fn attach(
        &self,
        conn: &Arc<Conn>,
        stream: u32,
        from: Option<u64>,
    ) -> Result<(), ErrorBody> {
        let mut t = lock(&self.target);
        if t.finished {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                "the output was delivered completely already",
            ));
        }
        if let Some((c, _)) = &t.to {
            if !c.is_dead() {
                return Err(ErrorBody::new(
                    ErrorCode::AlreadyExists,
                    "another connection holds this output",
                ));
            }
        }
        if !conn.open_out(stream) {
            return Err(ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("stream {stream} is in use"),
            ));
        }
        t.to = Some((conn.clone(), stream));
        t.resume = from;
        drop(t);
        self.attached.notify_all();
        Ok(())
    }

    fn current(&self) -> Option<(Arc<Conn>, u32)> {
        lock(&self.target).to.clone()
    }

    /// The target, and (once) where a newly attached host wants the output
    /// from: taken together, so nothing is sent to the new host before the
    /// rewind.
    fn current_and_resume(&self) -> Option<(Arc<Conn>, u32, Option<u64>)> {
        let mut t = lock(&self.target);
        let resume = t.resume.take();
        t.to.clone().map(|(c, s)| (c, s, resume))
    }

    /// Forgets `conn` (if it is still the target).
    fn detach(&self, conn: &Arc<Conn>, stream: u32) {
        let mut t = lock(&self.target);
        if t.to.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, conn)) {
            t.to = None;
        }
        drop(t);
        conn.close_out(stream);
    }

    fn run(self: Arc<Self>, src: File) {
        let mut src = Some(src);
        let mut kept = Kept::new(KEPT_OUTPUT);
        // The last bytes sent, and how many were sent in all.
        let mut sent = Kept::new(KEPT_OUTPUT);
        let mut sent_total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        let mut reported = 0;
        loop {
            if kept.dropped() > reported && self.current().is_some() {
                crate::log(&format!(
                    "relay: {} bytes of output dropped while no host was attached",
                    kept.dropped() - reported
                ));
                reported = kept.dropped();
            }
            let Some((conn, stream, resume)) = self.current_and_resume() else {
                // No host: keep reading so the process never blocks.
                match src.as_mut() {
                    Some(f) => match read_ready(f, &mut buf) {
                        Got::Data(n) => kept.push(Bytes::copy_from_slice(&buf[..n])),
                        Got::End => src = None,
                        Got::Nothing => {}
                    },
                    None => {
                        let t = lock(&self.target);
                        if t.to.is_none() {
                            let _ = self.attached.wait_timeout(t, TICK);
                        }
                    }
                }
                continue;
            };
            if let Some(from) = resume {
                let lost = rewind(&mut kept, &mut sent, &mut sent_total, from);
                if lost > 0 {
                    crate::log(&format!(
                        "relay: {lost} bytes sent to a host that lost them are no longer kept"
                    ));
                }
            }
            let credit = match conn.wait_credit(stream, TICK) {
                Credit::Bytes(n) => n.min(CHUNK),
                Credit::Closed => {
                    self.detach(&conn, stream);
                    continue;
                }
                Credit::Later => continue,
            };
            // What was kept goes first.
            if let Some(b) = kept.take(credit) {
                if conn.send_data(stream, b.clone()) {
                    sent_total += b.len() as u64;
                    sent.push(b);
                } else {
                    kept.unget(b);
                    self.detach(&conn, stream);
                }
                continue;
            }
            let Some(f) = src.as_mut() else {
                // Everything is delivered.
                let mut t = lock(&self.target);
                t.finished = true;
                t.to = None;
                drop(t);
                conn.close_out(stream);
                return;
            };
            match read_ready(f, &mut buf[..credit]) {
                Got::Data(n) => {
                    let b = Bytes::copy_from_slice(&buf[..n]);
                    if conn.send_data(stream, b.clone()) {
                        sent_total += n as u64;
                        sent.push(b);
                    } else {
                        kept.push(b);
                        self.detach(&conn, stream);
                    }
                }
                Got::End => src = None,
                Got::Nothing => {}
            }
        }
    }
}

enum Got {
    Data(usize),
    End,
    Nothing,
}

/// Reads what `f` has within [`TICK`].
fn read_ready(f: &mut File, buf: &mut [u8]) -> Got {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as libc::c_int) };
    if r <= 0 {
        return Got::Nothing;
    }
    match f.read(buf) {
        Ok(0) => Got::End,
        Ok(n) => Got::Data(n),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Got::Nothing,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Got::Nothing,
        // A pty whose last slave holder exited reads EIO: its end.
        Err(_) => Got::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_output_is_capped_oldest_first() {
        let mut k = Kept::new(10);
        k.push(Bytes::from_static(b"0123"));
        k.push(Bytes::from_static(b"4567"));
        k.push(Bytes::from_static(b"89ab"));
        assert_eq!((k.len(), k.dropped()), (10, 2));
        let mut out = Vec::new();
        while let Some(b) = k.take(3) {
            out.extend_from_slice(&b);
        }
        assert_eq!(out, b"23456789ab");
        k.push(Bytes::from(vec![7u8; 25]));
        assert_eq!((k.len(), k.dropped()), (10, 17));
        let b = k.take(4).unwrap_or_default();
        k.unget(b);
        assert_eq!(k.len(), 10);
    }

    fn drain(k: &mut Kept) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = k.take(usize::MAX) {
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn newest_bytes_come_off_the_back_in_order() {
        let mut k = Kept::new(100);
        k.push(Bytes::from_static(b"0123"));
        k.push(Bytes::from_static(b"4567"));
        let t: Vec<u8> = k.take_newest(6).concat();
        assert_eq!(t, b"234567");
        assert_eq!(drain(&mut k), b"01");
        k.push(Bytes::from_static(b"ab"));
        assert_eq!(k.take_newest(9).concat(), b"ab");
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn rewind_sends_again_what_the_host_did_not_store() {
        // 10 bytes sent in all, the last 6 still held; "xy" not sent yet.
        let mut sent = Kept::new(6);
        sent.push(Bytes::from_static(b"0123456789"));
        let mut kept = Kept::new(100);
        kept.push(Bytes::from_static(b"xy"));
        let mut total = 10;
        // The host stored 7: "789" again, then "xy".
        assert_eq!(rewind(&mut kept, &mut sent, &mut total, 7), 0);
        assert_eq!(total, 7);
        assert_eq!(sent.len(), 3);
        assert_eq!(drain(&mut kept), b"789xy");

        // The host stored 1: only the 6 still held come again, 3 are lost.
        let mut sent = Kept::new(6);
        sent.push(Bytes::from_static(b"0123456789"));
        let mut kept = Kept::new(100);
        let mut total = 10;
        assert_eq!(rewind(&mut kept, &mut sent, &mut total, 1), 3);
        assert_eq!(total, 4);
        assert_eq!(drain(&mut kept), b"456789");

        // The host has everything, or claims more than was sent.
        for from in [10, 1 << 40] {
            let mut sent = Kept::new(6);
            sent.push(Bytes::from_static(b"0123456789"));
            let mut kept = Kept::new(100);
            let mut total = 10;
            assert_eq!(rewind(&mut kept, &mut sent, &mut total, from), 0);
            assert_eq!((total, kept.len(), sent.len()), (10, 0, 6));
        }
    }
}
