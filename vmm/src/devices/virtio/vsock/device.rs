//! virtio-vsock device state: the three queues, the host listener, the
//! connections, and the packet handling between them. Changes of epoll
//! interest are recorded in `interest` and applied by the event handler
//! (only it holds the event loop's `EventOps`).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::connection::{Connection, State};
use super::packet::{read_tx, Header, Op, HDR_SIZE, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{GUEST_CID, HOST_CID, MAX_CONNECTIONS, MAX_PAYLOAD, QUEUE_SIZE};
use crate::devices::virtio::{
    expect_queues, ActivateError, Interrupt, VirtioDevice, INT_VRING, VIRTIO_RING_F_EVENT_IDX,
};

const VIRTIO_ID_VSOCK: u32 = 19;
const RX: usize = 0;
const TX: usize = 1;
/// Longest `CONNECT <port>\n` line accepted from a host client.
const MAX_HANDSHAKE: usize = 32;
/// Host-side ports for host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host socket cannot be created.
    #[error("cannot listen on vsock socket {path}: {err}")]
    Listen {
        /// Path.
        path: String,
        /// Cause.
        err: io::Error,
    },
    /// eventfd creation failed.
    #[error("eventfd: {0}")]
    EventFd(io::Error),
}

/// An epoll registration change for the event handler to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Register `fd` with `token`.
    Add(RawFd, u32, EventSet),
    /// Change what `fd` is watched for.
    Modify(RawFd, u32, EventSet),
    /// Unregister `fd` (the stream is kept alive until this is applied).
    Remove(RawFd, u32),
}

/// Connection key: (host-side port, guest-side port).
type Key = (u32, u32);

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
}

/// A virtio-vsock device bridged to Unix sockets.
pub struct Vsock {
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) listener: UnixListener,
    path: PathBuf,
    active: Option<Active>,
    conns: HashMap<Key, Connection>,
    tokens: HashMap<u32, Key>,
    handshakes: HashMap<u32, (UnixStream, Vec<u8>)>,
    control: VecDeque<Header>,
    ready: VecDeque<Key>,
    next_token: u32,
    next_local_port: u32,
    pub(super) interest: Vec<Interest>,
    /// Streams whose epoll removal is pending; dropped once applied.
    pub(super) graveyard: Vec<UnixStream>,
    /// Packets from the guest that were malformed and dropped.
    pub malformed_packets: u64,
    /// Connections closed before the guest's data reached the host.
    pub closed_with_pending: u64,
}

/// Control packets (RST, RESPONSE, CREDIT_UPDATE, ...) waiting for guest
/// RX buffers. A guest that floods TX with packets needing replies while
/// never giving RX buffers must not grow the VMM's memory: beyond this,
/// replies are dropped (the guest only hurts its own connections).
const MAX_CONTROL: usize = 4096;

/// Receive buffers filled per call before other events get their turn.
const RX_BUDGET: usize = QUEUE_SIZE as usize;

/// Tokens below this identify the queues and the listener.
pub const FIRST_CONN_TOKEN: u32 = 16;
/// Token of the listener.
pub const LISTENER_TOKEN: u32 = 8;

impl Vsock {
    /// Listens on `path` (replacing a stale socket file).
    pub fn new(path: &Path) -> Result<Self, VsockError> {
        let listen_err = |err| VsockError::Listen {
            path: path.display().to_string(),
            err,
        };
        if path.exists() {
            std::fs::remove_file(path).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let mut queue_evts = Vec::new();
        for _ in 0..3 {
            queue_evts.push(
                EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                    .map_err(VsockError::EventFd)?,
            );
        }
        Ok(Vsock {
            queue_evts,
            listener,
            path: path.to_path_buf(),
            active: None,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            handshakes: HashMap::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            next_token: FIRST_CONN_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            interest: Vec::new(),
            graveyard: Vec::new(),
            malformed_packets: 0,
            closed_with_pending: 0,
        })
    }

    /// Open connections (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn token(&mut self) -> u32 {
        loop {
            let t = self.next_token;
            self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_CONN_TOKEN);
            if !self.tokens.contains_key(&t) && !self.handshakes.contains_key(&t) {
                return t;
            }
        }
    }

    fn local_port(&mut self) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|(l, _)| *l == p) {
                return p;
            }
        }
    }

    fn watch(c: &Connection) -> EventSet {
        let mut set = EventSet::empty();
        if !c.readable && !c.host_eof && c.state != State::LocalInit {
            set |= EventSet::IN;
        }
        if c.has_pending_out() {
            set |= EventSet::OUT;
        }
        set
    }

    fn rewatch(&mut self, key: Key) {
        if let Some(c) = self.conns.get(&key) {
            self.interest.push(Interest::Modify(
                c.stream.as_raw_fd(),
                c.token,
                Self::watch(c),
            ));
        }
    }

    fn push_control(&mut self, h: Header) {
        if self.control.len() < MAX_CONTROL {
            self.control.push_back(h);
        }
    }

    fn rst(&mut self, h: &Header) {
        if h.op != Op::Rst {
            self.push_control(Header {
                src_cid: HOST_CID,
                dst_cid: GUEST_CID,
                src_port: h.dst_port,
                dst_port: h.src_port,
                len: 0,
                kind: TYPE_STREAM,
                op: Op::Rst,
                flags: 0,
                buf_alloc: 0,
                fwd_cnt: 0,
            });
        }
    }

    fn close(&mut self, key: Key, send_rst: bool) {
        if let Some(mut c) = self.conns.remove(&key) {
            if c.has_pending_out() {
                self.closed_with_pending += 1;
            }
            if send_rst {
                let h = c.header(Op::Rst, 0, 0);
                self.push_control(h);
            }
            self.tokens.remove(&c.token);
            self.interest
                .push(Interest::Remove(c.stream.as_raw_fd(), c.token));
            self.graveyard.push(c.stream);
        }
    }

    fn add_conn(&mut self, c: Connection) {
        let key = (c.local_port, c.peer_port);
        self.tokens.insert(c.token, key);
        self.interest.push(Interest::Add(
            c.stream.as_raw_fd(),
            c.token,
            Self::watch(&c),
        ));
        self.conns.insert(key, c);
    }

    /// Reads every packet the guest queued on TX and acts on it.
    pub(super) fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut packets = Vec::new();
        let mut used = false;
        let mut out_of_budget = false;
        {
            let mem = &active.mem;
            let q = &mut active.queues[TX];
            // Kicks are off while the queue is drained, and back on (with
            // EVENT_IDX: `avail_event` at the next entry) before the device
            // goes idle, with a last look for packets queued in between.
            // At most a ring's worth per call, so a guest that keeps
            // sending cannot hold the event loop or grow `packets`.
            let mut budget = usize::from(QUEUE_SIZE);
            let mut idle_rounds = 0;
            let _ = q.disable_notification(mem);
            'drain: loop {
                let mut popped = false;
                while let Some(chain) = q.pop_descriptor_chain(mem) {
                    popped = true;
                    let head = chain.head_index();
                    let packet = read_tx(chain, GUEST_CID).ok();
                    match packet {
                        Some(p) => packets.push(p),
                        None => self.malformed_packets += 1,
                    }
                    if q.add_used(mem, head, 0).is_err() {
                        // Kicks back on, so the queue is not left deaf.
                        let _ = q.enable_notification(mem);
                        break 'drain;
                    }
                    used = true;
                    budget -= 1;
                    if budget == 0 {
                        out_of_budget = true;
                        break 'drain;
                    }
                }
                if !popped {
                    idle_rounds += 1;
                }
                match q.enable_notification(mem) {
                    Ok(true) if idle_rounds < 2 => continue,
                    _ => break,
                }
            }
            if used && q.needs_notification(mem).unwrap_or(true) {
                active.interrupt.trigger(INT_VRING);
            }
        }
        if out_of_budget {
            // Come back after other events.
            let _ = self.queue_evts[TX].write(1);
        }
        for (h, payload) in packets {
            self.handle_packet(&h, &payload);
        }
        self.process_rx();
    }

    fn handle_packet(&mut self, h: &Header, payload: &[u8]) {
        if h.kind != TYPE_STREAM || h.dst_cid != HOST_CID {
            self.rst(h);
            return;
        }
        let key = (h.dst_port, h.src_port);
        if h.op == Op::Request {
            self.guest_connect(h);
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            self.rst(h);
            return;
        };
        c.update_peer_credit(h);
        // Every guest packet carries its credit: a connection that was
        // waiting for room in the guest may go on.
        if c.readable && c.peer_credit() > 0 && !self.ready.contains(&key) {
            self.ready.push_back(key);
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        match h.op {
            Op::Response if c.state == State::LocalInit => {
                c.state = State::Established;
                let line = format!("OK {}\n", c.local_port);
                // A fresh socket takes a dozen bytes; if not, the client is broken.
                if c.stream.write_all(line.as_bytes()).is_err() {
                    self.close(key, true);
                    return;
                }
                self.rewatch(key);
            }
            Op::Rst => {
                // The guest socket is gone, but what it already sent still
                // goes to the host before the host stream is closed.
                if c.has_pending_out() {
                    c.state = State::Closing;
                    c.peer_shut_send = true;
                    c.reset_by_peer = true;
                } else {
                    self.close(key, false);
                }
            }
            Op::Rw if c.state != State::LocalInit && !c.peer_shut_send => {
                // A guest overrunning its credit, or a host stream that
                // failed, ends the connection.
                if c.push_from_guest(payload).is_err() || c.flush_to_host().is_err() {
                    self.close(key, true);
                    return;
                }
                if c.credit_update_due() {
                    let u = c.header(Op::CreditUpdate, 0, 0);
                    self.push_control(u);
                }
                self.rewatch(key);
            }
            Op::Shutdown => {
                if h.flags & SHUTDOWN_SEND != 0 {
                    c.peer_shut_send = true;
                }
                if h.flags & (SHUTDOWN_SEND | SHUTDOWN_RCV) == (SHUTDOWN_SEND | SHUTDOWN_RCV) {
                    c.state = State::Closing;
                }
                self.finish_if_done(key);
            }
            Op::CreditUpdate => {}
            Op::CreditRequest => {
                let u = c.header(Op::CreditUpdate, 0, 0);
                self.push_control(u);
            }
            _ => self.close(key, true),
        }
    }

    /// Ends a closing connection once the guest's data reached the host.
    fn finish_if_done(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.has_pending_out() {
            return;
        }
        if c.state == State::Closing {
            let rst = !c.reset_by_peer;
            self.close(key, rst);
        } else if c.peer_shut_send {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
    }

    fn guest_connect(&mut self, h: &Header) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNECTIONS {
            self.rst(h);
            return;
        }
        let target = format!("{}_{}", self.path.display(), h.dst_port);
        let stream = match UnixStream::connect(&target) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => {
                self.rst(h);
                return;
            }
        };
        let token = self.token();
        let mut c = Connection::new(stream, token, h.dst_port, h.src_port, State::Established);
        c.update_peer_credit(h);
        let resp = c.header(Op::Response, 0, 0);
        self.add_conn(c);
        self.push_control(resp);
    }

    /// Accepts host clients; each must then send `CONNECT <port>\n`.
    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_err()
                        || self.handshakes.len() + self.conns.len() >= MAX_CONNECTIONS
                    {
                        continue;
                    }
                    let token = self.token();
                    self.interest
                        .push(Interest::Add(s.as_raw_fd(), token, EventSet::IN));
                    self.handshakes.insert(token, (s, Vec::new()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    fn handshake(&mut self, token: u32) {
        let Some((stream, buf)) = self.handshakes.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        // Byte by byte: anything after the newline belongs to the connection.
        let done = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if buf.len() < MAX_HANDSHAKE => buf.push(byte[0]),
                Ok(_) => break Err(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break Err(()),
            }
        };
        let Some((stream, buf)) = self.handshakes.remove(&token) else {
            return;
        };
        let port = done.ok().and_then(|_| parse_connect(&buf));
        match port {
            Some(port) if self.active.is_some() => {
                let local = self.local_port();
                let mut c = Connection::new(stream, token, local, port, State::LocalInit);
                let req = c.header(Op::Request, 0, 0);
                self.tokens.insert(token, (local, port));
                self.interest.push(Interest::Modify(
                    c.stream.as_raw_fd(),
                    token,
                    EventSet::empty(),
                ));
                self.conns.insert((local, port), c);
                self.push_control(req);
                self.process_rx();
            }
            _ => {
                self.interest
                    .push(Interest::Remove(stream.as_raw_fd(), token));
                self.graveyard.push(stream);
            }
        }
    }

    /// An epoll event for a host stream (`token` >= FIRST_CONN_TOKEN).
    pub(super) fn host_event(&mut self, token: u32, events: EventSet) {
        if self.handshakes.contains_key(&token) {
            self.handshake(token);
            return;
        }
        let Some(&key) = self.tokens.get(&token) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if events.contains(EventSet::OUT) && c.has_pending_out() {
            if c.flush_to_host().is_err() {
                self.close(key, true);
                self.process_rx();
                return;
            }
            // The host took data: the guest may have room to send again.
            if c.credit_update_due() {
                let u = c.header(Op::CreditUpdate, 0, 0);
                self.push_control(u);
            }
            self.finish_if_done(key);
        }
        let Some(c) = self.conns.get_mut(&key) else {
            self.process_rx();
            return;
        };
        if c.host_eof && events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            // The host is gone in both directions.
            self.close(key, true);
            self.process_rx();
            return;
        }
        if !c.host_eof
            && events.intersects(
                EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR,
            )
        {
            c.readable = true;
            if !self.ready.contains(&key) {
                self.ready.push_back(key);
            }
        }
        self.rewatch(key);
        self.process_rx();
    }

    /// Fills the guest's RX buffers: control packets first, then data from
    /// host streams that are readable and have credit.
    pub(super) fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let q = &mut active.queues[RX];
        let mut used = false;
        let mut buf = vec![0u8; MAX_PAYLOAD as usize];
        let mut rewatch = Vec::new();
        let mut closing = Vec::new();
        // Buffers taken in this call, rounds that found none although the
        // ring said there were more, and whether the budget ran out.
        let mut taken = 0usize;
        let mut idle_rounds = 0;
        let mut out_of_budget = false;
        'rounds: loop {
            // Set when there is something to send but no buffer for it.
            let mut starved = false;
            let taken_before = taken;
            loop {
                if taken >= RX_BUDGET {
                    out_of_budget = true;
                    break;
                }
                // Pick what to send before taking a buffer.
                let next = if let Some(h) = self.control.pop_front() {
                    Some((h, 0usize))
                } else {
                    let mut found = None;
                    for _ in 0..self.ready.len() {
                        let Some(key) = self.ready.pop_front() else {
                            break;
                        };
                        let Some(c) = self.conns.get_mut(&key) else {
                            continue;
                        };
                        if !c.readable
                            || c.host_eof
                            || c.state != State::Established
                            || c.peer_credit() == 0
                        {
                            // Not now; credit updates and events bring it back.
                            continue;
                        }
                        found = Some(key);
                        break;
                    }
                    match found {
                        Some(key) => {
                            let Some(chain) = q.pop_descriptor_chain(mem) else {
                                self.ready.push_front(key);
                                starved = true;
                                break;
                            };
                            taken += 1;
                            let head = chain.head_index();
                            let Ok(mut w) = chain.writer(mem) else {
                                let _ = q.add_used(mem, head, 0);
                                used = true;
                                self.ready.push_front(key);
                                continue;
                            };
                            let Some(c) = self.conns.get_mut(&key) else {
                                continue;
                            };
                            let room = w.available_bytes().saturating_sub(HDR_SIZE);
                            let want = room.min(c.peer_credit() as usize).min(buf.len());
                            if want == 0 {
                                let _ = q.add_used(mem, head, 0);
                                used = true;
                                self.ready.push_back(key);
                                continue;
                            }
                            match c.stream.read(&mut buf[..want]) {
                                Ok(0) => {
                                    // The host will send no more; it may still
                                    // read what the guest sends back.
                                    c.host_eof = true;
                                    c.readable = false;
                                    let h = c.header(Op::Shutdown, 0, SHUTDOWN_SEND);
                                    let n = write_packet(&mut w, &h, &[]);
                                    let _ = q.add_used(mem, head, n);
                                    used = true;
                                    rewatch.push(key);
                                }
                                Ok(n) => {
                                    let h = c.header(Op::Rw, n as u32, 0);
                                    let written = write_packet(&mut w, &h, &buf[..n]);
                                    c.sent_to_guest(n as u32);
                                    let _ = q.add_used(mem, head, written);
                                    used = true;
                                    self.ready.push_back(key);
                                }
                                Err(e)
                                    if e.kind() == io::ErrorKind::WouldBlock
                                        || e.kind() == io::ErrorKind::Interrupted =>
                                {
                                    c.readable = e.kind() == io::ErrorKind::Interrupted;
                                    q.go_to_previous_position();
                                    rewatch.push(key);
                                    if c.readable {
                                        self.ready.push_back(key);
                                    }
                                }
                                Err(_) => {
                                    q.go_to_previous_position();
                                    closing.push(key);
                                }
                            }
                            continue;
                        }
                        None => None,
                    }
                };
                let Some((h, _)) = next else { break };
                let Some(chain) = q.pop_descriptor_chain(mem) else {
                    self.control.push_front(h);
                    starved = true;
                    break;
                };
                taken += 1;
                let head = chain.head_index();
                let n = match chain.writer(mem) {
                    Ok(mut w) => write_packet(&mut w, &h, &[]),
                    Err(_) => 0,
                };
                let _ = q.add_used(mem, head, n);
                used = true;
            }
            // Out of buffers: ask for a kick when the guest gives more
            // (with EVENT_IDX, `avail_event` moves to the next entry), and
            // go on while buffers were given in between. Two rounds that
            // found none although the ring said so mean the avail index
            // lies: wait for the kick.
            if starved {
                let more = q.enable_notification(mem).unwrap_or(false);
                if taken == taken_before {
                    idle_rounds += 1;
                }
                if more && idle_rounds < 2 {
                    continue 'rounds;
                }
            }
            break;
        }
        if used && q.needs_notification(mem).unwrap_or(true) {
            active.interrupt.trigger(INT_VRING);
        }
        if out_of_budget {
            // Come back after other events.
            let _ = self.queue_evts[RX].write(1);
        }
        for key in rewatch {
            self.rewatch(key);
        }
        if !closing.is_empty() {
            for key in closing {
                self.close(key, true);
            }
            self.process_rx();
        }
    }
}

/// Writes a header and payload into a guest RX buffer; returns the bytes
/// written (0 when the buffer cannot hold them, which the caller avoids).
fn write_packet(w: &mut virtio_queue::Writer<'_>, h: &Header, payload: &[u8]) -> u32 {
    if w.available_bytes() < HDR_SIZE + payload.len() {
        return 0;
    }
    if w.write_all(&h.to_bytes()).is_err() || w.write_all(payload).is_err() {
        return 0;
    }
    (HDR_SIZE + payload.len()) as u32
}

/// Parses `CONNECT <port>` (the newline already removed).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.strip_suffix('\r').unwrap_or(s);
    let port = s.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_RING_F_EVENT_IDX
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_bytes(&GUEST_CID.to_le_bytes(), offset, data)
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        acked: u64,
    ) -> Result<(), ActivateError> {
        let mut queues = expect_queues(queues, 3)?;
        for q in &mut queues {
            q.set_event_idx(acked & VIRTIO_RING_F_EVENT_IDX != 0);
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.close(k, false);
        }
        self.control.clear();
        self.ready.clear();
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        // The socket file is ours; nothing else should find it afterwards.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::W;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    /// A queue over `mock`, its used ring moved to `used` (the mock's own
    /// has no room for `avail_event`).
    fn queue(mock: &MockSplitQueue<GuestMemoryMmap>, used: u32) -> Queue {
        let mut q: Queue = mock.create_queue().unwrap();
        q.set_used_ring_address(Some(used), Some(0));
        q
    }

    fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    fn u16_at(m: &GuestMemoryMmap, addr: u64) -> u16 {
        m.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn event_idx_rearms_kicks_on_both_queues() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vsock::new(&dir.path().join("v.sock")).unwrap();
        let rxm = MockSplitQueue::create(&m, GuestAddress(0), 16);
        let txm = MockSplitQueue::create(&m, GuestAddress(0x2000), 16);
        let evm = MockSplitQueue::create(&m, GuestAddress(0x4000), 16);
        let queues = vec![
            queue(&rxm, 0x1000),
            queue(&txm, 0x3000),
            queue(&evm, 0x5000),
        ];
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        v.activate(
            m.clone(),
            Interrupt::new(irq.try_clone().unwrap()),
            queues,
            VIRTIO_RING_F_EVENT_IDX,
        )
        .unwrap();
        // Two connection requests to host ports nobody listens on: each
        // is answered with an RST.
        for i in 0..2u16 {
            let h = Header {
                src_cid: GUEST_CID,
                dst_cid: HOST_CID,
                src_port: 1000 + u32::from(i),
                dst_port: 7777,
                len: 0,
                kind: TYPE_STREAM,
                op: Op::Request,
                flags: 0,
                buf_alloc: 65536,
                fwd_cnt: 0,
            };
            let addr = 0x8000 + u64::from(i) * 0x100;
            m.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
            txm.add_desc_chains(&[desc(addr, HDR_SIZE as u32, 0)], i)
                .unwrap();
        }
        // Room for one reply only.
        rxm.add_desc_chains(&[desc(0x10000, 4096, W)], 0).unwrap();
        v.process_tx();
        // used idx at +2, avail_event after 16 used entries at +4+128.
        assert_eq!(u16_at(&m, 0x3002), 2, "both packets taken");
        assert_eq!(u16_at(&m, 0x3084), 2, "TX kick wanted at the next entry");
        assert_eq!(u16_at(&m, 0x1002), 1, "one reply delivered");
        assert_eq!(
            u16_at(&m, 0x1084),
            1,
            "an RST waits for a buffer: RX kick wanted at the next entry"
        );
        // The guest gives a buffer (and would kick): the second RST goes.
        rxm.add_desc_chains(&[desc(0x11000, 4096, W)], 1).unwrap();
        v.process_rx();
        assert_eq!(u16_at(&m, 0x1002), 2);
        let mut b = [0u8; HDR_SIZE];
        m.read_slice(&mut b, GuestAddress(0x11000)).unwrap();
        let rst = Header::parse(&b);
        assert_eq!((rst.op, rst.dst_port, rst.src_port), (Op::Rst, 1001, 7777));
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
        assert_eq!(parse_connect(b"connect 1"), None);
        assert_eq!(parse_connect(&[0xff, 0xfe]), None);
    }

    #[test]
    fn socket_file_is_removed_with_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.sock");
        let v = Vsock::new(&p).unwrap();
        assert!(p.exists());
        drop(v);
        assert!(!p.exists());
    }
}
