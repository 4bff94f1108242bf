//! One bridged connection: its host stream, its state, and the credit
//! accounting in both directions. Bytes from the guest wait in `out` until
//! the host stream takes them; `out` never grows past the buffer the guest
//! was told about (`CONN_BUF`), and the host stream is read only as far as
//! the guest has credit.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use super::packet::{Header, Op, TYPE_STREAM};
use super::{CONN_BUF, GUEST_CID, HOST_CID};

/// The guest sent more than the buffer it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest overran its credit: {0} bytes pending, {CONN_BUF} offered")]
pub struct CreditOverrun(pub usize);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    LocalInit,
    /// Data flows.
    Established,
    /// The guest closed; waiting for `out` to drain before the end.
    Closing,
}

/// A bridged connection.
pub struct Connection {
    /// The host side.
    pub stream: UnixStream,
    /// Epoll token of `stream`.
    pub token: u32,
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    /// Life-cycle state.
    pub state: State,
    /// The host stream has data we have not read yet.
    pub readable: bool,
    /// The host stream reached end of file.
    pub host_eof: bool,
    /// The guest said it will send no more.
    pub peer_shut_send: bool,
    /// The guest reset the connection (no RST goes back).
    pub reset_by_peer: bool,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    rx_cnt: u32,
    fwd_cnt: u32,
    last_fwd_sent: u32,
    out: VecDeque<u8>,
}

impl Connection {
    /// A new connection in `state`.
    pub fn new(
        stream: UnixStream,
        token: u32,
        local_port: u32,
        peer_port: u32,
        state: State,
    ) -> Self {
        Connection {
            stream,
            token,
            local_port,
            peer_port,
            state,
            readable: false,
            host_eof: false,
            peer_shut_send: false,
            reset_by_peer: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_sent: 0,
            out: VecDeque::new(),
        }
    }

    /// Takes the credit fields of a guest packet.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
    }

    /// Bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records `n` bytes sent to the guest.
    pub fn sent_to_guest(&mut self, n: u32) {
        self.rx_cnt = self.rx_cnt.wrapping_add(n);
    }

    /// Queues guest data for the host; refuses data beyond the advertised
    /// buffer (a guest ignoring its credit).
    pub fn push_from_guest(&mut self, data: &[u8]) -> Result<(), CreditOverrun> {
        if self.out.len() + data.len() > CONN_BUF as usize {
            return Err(CreditOverrun(self.out.len() + data.len()));
        }
        self.out.extend(data);
        Ok(())
    }

    /// Whether guest data is waiting for the host stream.
    pub fn has_pending_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes as much pending data to the host stream as it takes.
    pub fn flush_to_host(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.out.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the guest should hear about freed buffer space now.
    pub fn credit_update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.last_fwd_sent) >= CONN_BUF / 4
    }

    /// A header from the host side of this connection, carrying our credit.
    pub fn header(&mut self, op: Op, len: u32, flags: u32) -> Header {
        self.last_fwd_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (Connection, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Connection::new(a, 1, 1024, 5000, State::Established), b)
    }

    #[test]
    fn credit_is_bounded_by_what_the_guest_advertised() {
        let (mut c, _peer) = conn();
        let mut h = c.header(Op::Rw, 0, 0);
        h.buf_alloc = 1000;
        h.fwd_cnt = 0;
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 1000);
        c.sent_to_guest(600);
        assert_eq!(c.peer_credit(), 400);
        // A guest claiming to have consumed more than it got gets no extra.
        h.fwd_cnt = 10_000;
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn guest_cannot_overrun_the_buffer() {
        let (mut c, _peer) = conn();
        assert!(c.push_from_guest(&vec![0u8; CONN_BUF as usize]).is_ok());
        assert!(c.push_from_guest(&[1]).is_err());
    }

    #[test]
    fn flush_counts_forwarded_bytes_and_stops_when_the_host_is_full() {
        let (mut c, mut peer) = conn();
        c.push_from_guest(b"hello").unwrap();
        c.flush_to_host().unwrap();
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(c.header(Op::Rw, 0, 0).fwd_cnt, 5);
        // Fill the socket buffer: flush returns Ok with data left over.
        let big = vec![7u8; CONN_BUF as usize];
        while c.push_from_guest(&big[..65536]).is_ok() {
            c.flush_to_host().unwrap();
            if c.has_pending_out() {
                break;
            }
        }
        assert!(c.has_pending_out());
    }
}
