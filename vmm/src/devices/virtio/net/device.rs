//! virtio-net device state: the TAP, the two queues, the MAC in config
//! space, feature negotiation (offloads mapped onto TUNSETOFFLOAD,
//! notification suppression with EVENT_IDX), and moving frames between
//! the queues and the TAP. Whether the TAP is in the event loop is decided
//! here (`wants_tap`) and applied by the event handler, the only holder of
//! the loop's `EventOps`.

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::request::{parse_tx, GsoType, TxFrame, VnetHdr, HDR_F_NEEDS_CSUM, MAX_RX_LEN};
use super::rx::{Received, RxBuffers};
use super::tap::{Tap, TapError, OFFLOAD_CSUM, OFFLOAD_TSO4, OFFLOAD_TSO6};
use super::vhost::{Rings, VhostNet};
use super::{MacAddr, MAX_FRAME_LEN, QUEUE_SIZE, VNET_HDR_LEN};
use crate::devices::virtio::{
    expect_queues, read_config_bytes, ActivateError, Interrupt, VirtioDevice, INT_VRING,
    VIRTIO_RING_F_EVENT_IDX,
};

const VIRTIO_ID_NET: u32 = 1;
const RX: usize = 0;
const TX: usize = 1;

/// Feature bits (virtio 1.2, 5.1.3).
pub mod features {
    /// The device handles packets with partial checksum (guest → host).
    pub const CSUM: u64 = 1 << 0;
    /// The driver handles packets with partial checksum (host → guest).
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The device has a MAC address in config space.
    pub const MAC: u64 = 1 << 5;
    /// The driver takes TSOv4 packets.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The driver takes TSOv6 packets.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The device takes TSOv4 packets.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// The device takes TSOv6 packets.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// The driver can merge receive buffers (a frame spans several chains).
    pub const MRG_RXBUF: u64 = 1 << 15;
}

/// Frames moved per call before other events get their turn.
const BUDGET: usize = 256;

/// How a net device is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of an existing TAP device.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
    /// Move frames with the kernel's vhost-net instead of the VMM's event loop.
    pub vhost: bool,
}

/// Errors creating a net device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP cannot be used.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// eventfd creation failed.
    #[error("eventfd: {0}")]
    EventFd(io::Error),
}

/// Counters, for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest (headers excluded).
    pub rx_bytes: u64,
    /// Frames read from the TAP but not delivered (larger than every
    /// buffer the guest could give, or malformed from the TAP).
    pub rx_dropped: u64,
    /// Receive chains the guest got back unused because they were malformed.
    pub rx_malformed: u64,
    /// TAP read errors other than "nothing to read".
    pub rx_errors: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Bytes written to the TAP (headers excluded).
    pub tx_bytes: u64,
    /// Frames dropped because the TAP's queue was full.
    pub tx_dropped: u64,
    /// Transmit chains refused because they were malformed.
    pub tx_malformed: u64,
    /// Frames the TAP refused (e.g. an invalid offload header).
    pub tx_errors: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    acked: u64,
}

/// Where received frames come from: the TAP (a test gives its own frames).
pub(super) trait FrameSource {
    /// Reads one frame (header first) into `segments` of guest memory, in
    /// order; returns its full length, more than the segments hold if it
    /// did not fit (and was dropped).
    fn read_into(
        &self,
        mem: &GuestMemoryMmap,
        segments: &[(GuestAddress, u32)],
    ) -> io::Result<usize>;
    /// Reads one frame (header first) into `buf`.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Where transmitted frames go: the TAP (a test keeps them).
pub(super) trait FrameSink {
    /// Writes one parsed frame.
    fn write(&self, mem: &GuestMemoryMmap, frame: &TxFrame) -> io::Result<usize>;
}

impl FrameSink for Tap {
    fn write(&self, mem: &GuestMemoryMmap, frame: &TxFrame) -> io::Result<usize> {
        self.write_frame(mem, frame)
    }
}

impl FrameSource for Tap {
    fn read_into(
        &self,
        mem: &GuestMemoryMmap,
        segments: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        self.read_frame_into(mem, segments)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_frame(buf)
    }
}

/// The receive side's state.
struct RxState {
    /// Guest buffers taken from the RX queue and not yet used.
    bufs: RxBuffers,
    /// A frame read into the VMM (only while the guest has given less room
    /// than the largest frame), `pending` bytes long.
    bounce: Vec<u8>,
    /// Length of the frame in `bounce` waiting for guest buffers (0: none).
    pending: usize,
    /// The guest has no room: the TAP is not read until it notifies RX.
    waiting: bool,
    /// The TAP failed; it is no longer read.
    tap_broken: bool,
}

impl RxState {
    fn new() -> Self {
        RxState {
            bufs: RxBuffers::new(),
            bounce: vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN],
            pending: 0,
            waiting: false,
            tap_broken: false,
        }
    }

    /// Forgets the guest's buffers and any frame waiting for them.
    fn reset(&mut self) {
        self.bufs.clear();
        self.pending = 0;
        self.waiting = false;
    }
}

/// A virtio-net device on a TAP.
pub struct Net {
    pub(super) tap: Tap,
    pub(super) queue_evts: Vec<EventFd>,
    active: Option<Active>,
    config_space: [u8; 6],
    features: u64,
    rx: RxState,
    /// Whether the TAP is registered with the event loop (event handler's).
    pub(super) tap_registered: bool,
    /// Frames go through vhost-net (the event loop watches neither the
    /// queues nor the TAP).
    pub(super) use_vhost: bool,
    /// The vhost-net instance, once guest memory exists.
    vhost: Option<VhostNet>,
    /// Counters.
    pub metrics: NetMetrics,
}

impl Net {
    /// Attaches to the TAP described by `cfg`.
    pub fn new(cfg: &NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&cfg.tap)?;
        let mut net = Net::with_tap(tap, cfg.mac)?;
        net.use_vhost = cfg.vhost;
        Ok(net)
    }

    /// A device on an already attached TAP.
    pub fn with_tap(tap: Tap, mac: MacAddr) -> Result<Self, NetError> {
        let mut features = features::MAC | features::MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX;
        if tap.offloads_supported() {
            features |= features::CSUM
                | features::GUEST_CSUM
                | features::GUEST_TSO4
                | features::GUEST_TSO6
                | features::HOST_TSO4
                | features::HOST_TSO6;
        }
        let mut queue_evts = Vec::with_capacity(2);
        for _ in 0..2 {
            queue_evts.push(
                EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(NetError::EventFd)?,
            );
        }
        Ok(Net {
            tap,
            queue_evts,
            active: None,
            config_space: mac.bytes(),
            features,
            rx: RxState::new(),
            tap_registered: false,
            use_vhost: false,
            vhost: None,
            metrics: NetMetrics::default(),
        })
    }

    /// Whether the TAP should be in the event loop: the device runs, the
    /// guest has room, and the TAP works.
    pub(super) fn wants_tap(&self) -> bool {
        self.active.is_some() && !self.rx.waiting && !self.rx.tap_broken
    }

    /// TUN_F_* offloads for the features the guest acked: the TAP may hand
    /// the guest only what the guest said it takes.
    fn tap_offloads(acked: u64) -> u32 {
        let mut flags = 0;
        if acked & features::GUEST_CSUM != 0 {
            flags |= OFFLOAD_CSUM;
            if acked & features::GUEST_TSO4 != 0 {
                flags |= OFFLOAD_TSO4;
            }
            if acked & features::GUEST_TSO6 != 0 {
                flags |= OFFLOAD_TSO6;
            }
        }
        flags
    }

    /// Sends every frame the guest queued on TX to the TAP.
    pub(super) fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if transmit(active, &mut self.metrics, &self.tap) {
            // More may be queued: come back after other events.
            let _ = self.queue_evts[TX].write(1);
        }
    }

    /// Moves frames from the TAP into the guest's receive buffers until the
    /// TAP is empty, the guest is out of room, or the budget is spent.
    pub(super) fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if receive(active, &mut self.rx, &mut self.metrics, &self.tap) {
            // The budget ran out: come back after other events.
            let _ = self.queue_evts[RX].write(1);
        }
    }

    /// The guest gave receive buffers (or the device woke itself up).
    pub(super) fn rx_notified(&mut self) {
        self.rx.waiting = false;
        if let Some(active) = self.active.as_mut() {
            // Kicks are wanted again only when the device runs out of
            // buffers (a no-op with EVENT_IDX, where avail_event moves only
            // then).
            let _ = active.queues[RX].disable_notification(&active.mem);
        }
        self.process_rx();
    }
}

/// Sends every chain on the TX queue to `sink`, at most `BUDGET`; the guest
/// is interrupted once at the end if it wants to be. Kicks are off while
/// the queue is drained and back on (`avail_event` moved past what was
/// taken, with EVENT_IDX) before the device goes idle, with a last look for
/// chains queued in between. Returns true when the budget ran out.
fn transmit<S: FrameSink>(active: &mut Active, m: &mut NetMetrics, sink: &S) -> bool {
    let mem = &active.mem;
    let q = &mut active.queues[TX];
    let mut used_any = false;
    let mut budget = BUDGET;
    let mut idle_rounds = 0;
    let _ = q.disable_notification(mem);
    let out_of_budget = 'drain: loop {
        let mut popped = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            popped = true;
            let head = chain.head_index();
            match parse_tx(chain) {
                Ok(frame) if !tx_header_allowed(&frame.hdr, active.acked) => m.tx_malformed += 1,
                Ok(frame) => match sink.write(mem, &frame) {
                    Ok(_) => {
                        m.tx_frames += 1;
                        m.tx_bytes += u64::from(frame.len) - VNET_HDR_LEN as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => m.tx_dropped += 1,
                    Err(_) => m.tx_errors += 1,
                },
                Err(_) => m.tx_malformed += 1,
            }
            // Fails only for a head outside the table (then counted as
            // malformed above): that entry cannot be returned.
            let _ = q.add_used(mem, head, 0);
            used_any = true;
            budget -= 1;
            if budget == 0 {
                break 'drain true;
            }
        }
        if !popped {
            idle_rounds += 1;
        }
        // A second empty round means the avail index lies: stop.
        match q.enable_notification(mem) {
            Ok(true) if idle_rounds < 2 => continue,
            _ => break false,
        }
    };
    if used_any && q.needs_notification(mem).unwrap_or(true) {
        active.interrupt.trigger(INT_VRING);
    }
    out_of_budget
}

/// Moves frames from `src` into the guest's receive buffers until `src`
/// has none, the guest is out of room, or `BUDGET` frames or rounds are
/// spent; the guest is interrupted once at the end if it wants to be.
///
/// With mergeable buffers the device first takes room for the largest
/// frame and reads straight into guest memory; only when the guest has
/// posted less than that (and its ring could hold more) is a frame read
/// into the VMM and copied once it fits, so a guest posting few buffers at
/// a time still gets small frames. Without mergeable buffers a frame goes
/// straight into one chain, and a frame larger than that chain is dropped
/// (the chain is kept). When the guest has no room, RX kicks are turned on
/// (with a last look for buffers posted in between) and the TAP is left
/// alone until one comes. Returns true when the budget ran out.
fn receive<S: FrameSource>(
    active: &mut Active,
    rx: &mut RxState,
    m: &mut NetMetrics,
    src: &S,
) -> bool {
    let mem = &active.mem;
    let q = &mut active.queues[RX];
    let mergeable = active.acked & features::MRG_RXBUF != 0;
    let ring = usize::from(q.size());
    // Buffers one frame may take: the whole ring, or one.
    let max_bufs = if mergeable { ring } else { 1 };
    let mut used_any = false;
    let mut budget = BUDGET;
    let out_of_budget = loop {
        if budget == 0 {
            break true;
        }
        budget -= 1;
        let want = if rx.pending > 0 {
            rx.pending
        } else if mergeable {
            MAX_RX_LEN as usize
        } else {
            1
        };
        let taken = rx.bufs.take(q, mem, want, max_bufs);
        m.rx_malformed += taken.malformed as u64;
        used_any |= taken.malformed > 0;

        if rx.pending > 0 {
            let frame = &rx.bounce[..rx.pending];
            if rx.bufs.write_frame(q, mem, mergeable, frame).is_some() {
                m.rx_frames += 1;
                m.rx_bytes += (rx.pending - VNET_HDR_LEN) as u64;
                rx.pending = 0;
                used_any = true;
                continue;
            }
            if rx.bufs.len() >= max_bufs {
                // More than every buffer the guest can give at once.
                m.rx_dropped += 1;
                rx.pending = 0;
                continue;
            }
        } else if rx.tap_broken {
            break false;
        } else if !rx.bufs.is_empty() {
            if mergeable && rx.bufs.capacity() < MAX_RX_LEN as usize && rx.bufs.len() < ring {
                match src.read(&mut rx.bounce) {
                    Ok(n) if n < VNET_HDR_LEN || n > rx.bounce.len() => m.rx_dropped += 1,
                    Ok(n) => rx.pending = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => {
                        m.rx_errors += 1;
                        rx.tap_broken = true;
                        break false;
                    }
                }
                continue;
            }
            match rx
                .bufs
                .receive(q, mem, mergeable, |segs| src.read_into(mem, segs))
            {
                Received::Frame { len, .. } => {
                    m.rx_frames += 1;
                    m.rx_bytes += (len - VNET_HDR_LEN) as u64;
                    used_any = true;
                }
                Received::Truncated(_) | Received::Runt(_) => m.rx_dropped += 1,
                Received::Error(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Received::Error(_) => {
                    m.rx_errors += 1;
                    rx.tap_broken = true;
                    break false;
                }
            }
            continue;
        }
        // Out of room: ask for a kick, then look once more, since buffers
        // posted before the kicks were on may not have kicked.
        if let Ok(true) = q.enable_notification(mem) {
            let taken = rx.bufs.take(q, mem, want, max_bufs);
            m.rx_malformed += taken.malformed as u64;
            used_any |= taken.malformed > 0;
            if taken.held > 0 {
                let _ = q.disable_notification(mem);
                continue;
            }
            if taken.malformed > 0 {
                // `avail_event` is now behind what was taken: ask again
                // next round, or the next buffer would not kick.
                continue;
            }
        }
        rx.waiting = true;
        break false;
    };
    if used_any && q.needs_notification(mem).unwrap_or(true) {
        active.interrupt.trigger(INT_VRING);
    }
    out_of_budget
}

/// Whether a TX header asks only for offloads the guest negotiated: the
/// device's checksum offload for NEEDS_CSUM, HOST_TSO4/6 for TCP
/// segmentation; no UDP fragmentation or ECN (never offered), and no
/// receive-only flags.
fn tx_header_allowed(hdr: &VnetHdr, acked: u64) -> bool {
    let flags_ok = match hdr.flags() {
        0 => true,
        HDR_F_NEEDS_CSUM => acked & features::CSUM != 0,
        _ => false,
    };
    let gso_ok = !hdr.gso_ecn()
        && match hdr.gso_type() {
            GsoType::None => true,
            GsoType::TcpV4 => acked & features::HOST_TSO4 != 0,
            GsoType::TcpV6 => acked & features::HOST_TSO6 != 0,
            GsoType::Udp | GsoType::Unknown(_) => false,
        };
    flags_ok && gso_ok
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data)
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
        let mut queues = expect_queues(queues, 2)?;
        let event_idx = acked & VIRTIO_RING_F_EVENT_IDX != 0;
        for q in &mut queues {
            q.set_event_idx(event_idx);
        }
        self.tap
            .set_offload(Self::tap_offloads(acked))
            .map_err(|e| ActivateError::Backend(format!("TUNSETOFFLOAD: {e}")))?;
        if self.use_vhost {
            let vhost = self
                .vhost
                .as_mut()
                .ok_or_else(|| ActivateError::Backend("vhost-net was not set up".into()))?;
            // Before the kernel can interrupt: no status read may miss it.
            interrupt.set_rings_elsewhere(true);
            let rings = Rings {
                acked,
                queues: &queues,
                kicks: &self.queue_evts,
                call: interrupt.irqfd(),
                tap: self.tap.file(),
            };
            // The transport's reset clears the override again.
            if let Err(e) = vhost.start(&mem, &rings) {
                interrupt.set_rings_elsewhere(false);
                return Err(ActivateError::Backend(e.to_string()));
            }
            return Ok(());
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
            acked,
        });
        self.rx.reset();
        // Wake the event loop so that it starts watching the TAP.
        let _ = self.queue_evts[RX].write(1);
        Ok(())
    }

    fn attach_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), ActivateError> {
        if self.use_vhost && self.vhost.is_none() {
            let v = VhostNet::open(mem).map_err(|e| ActivateError::Backend(e.to_string()))?;
            self.vhost = Some(v);
            eprintln!(
                "cocoon-vmm: net {}: frames through vhost-net",
                self.tap.name()
            );
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(v) = self.vhost.as_mut() {
            v.stop();
        }
        self.active = None;
        self.rx.reset();
        let _ = self.tap.set_offload(0);
        // Wake the event loop so that it stops watching the TAP.
        let _ = self.queue_evts[RX].write(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::{linked, mem, W};
    use crate::devices::virtio::net::request::tests::{A, B};
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes};

    #[test]
    fn offloads_follow_the_guest() {
        use features::*;
        assert_eq!(Net::tap_offloads(0), 0);
        assert_eq!(Net::tap_offloads(GUEST_TSO4), 0, "TSO needs checksums");
        assert_eq!(Net::tap_offloads(GUEST_CSUM), OFFLOAD_CSUM);
        assert_eq!(
            Net::tap_offloads(GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | HOST_TSO4),
            OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6
        );
    }

    fn active_with(
        m: &GuestMemoryMmap,
        rxq: &MockSplitQueue<GuestMemoryMmap>,
        mrg: bool,
    ) -> (Active, EventFd) {
        let acked = if mrg { features::MRG_RXBUF } else { 0 };
        active_acked(m, rxq, acked)
    }

    fn active_acked(
        m: &GuestMemoryMmap,
        rxq: &MockSplitQueue<GuestMemoryMmap>,
        acked: u64,
    ) -> (Active, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let txq = MockSplitQueue::create(m, GuestAddress(0x8_0000), 16);
        let mut queues: Vec<Queue> = vec![queue(rxq), queue(&txq)];
        for q in &mut queues {
            q.set_event_idx(acked & VIRTIO_RING_F_EVENT_IDX != 0);
        }
        (
            Active {
                mem: m.clone(),
                interrupt: Interrupt::new(irq.try_clone().unwrap()),
                queues,
                acked,
            },
            irq,
        )
    }

    #[test]
    fn tx_headers_are_held_to_the_negotiated_features() {
        use features::*;
        let hdr = |flags: u8, gso: u8| {
            let mut bytes = [0u8; VNET_HDR_LEN];
            bytes[0] = flags;
            bytes[1] = gso;
            VnetHdr { bytes }
        };
        let all = CSUM | HOST_TSO4 | HOST_TSO6;
        assert!(tx_header_allowed(&hdr(0, 0), 0));
        assert!(
            !tx_header_allowed(&hdr(1, 0), 0),
            "checksum offload not acked"
        );
        assert!(tx_header_allowed(&hdr(1, 0), CSUM));
        assert!(!tx_header_allowed(&hdr(1, 1), CSUM), "TSO4 not acked");
        assert!(tx_header_allowed(&hdr(1, 1), all));
        assert!(tx_header_allowed(&hdr(1, 4), all));
        assert!(!tx_header_allowed(&hdr(1, 4), CSUM | HOST_TSO4));
        assert!(!tx_header_allowed(&hdr(1, 0x81), all), "ECN never offered");
        assert!(!tx_header_allowed(&hdr(1, 3), all), "UFO never offered");
        assert!(!tx_header_allowed(&hdr(1, 9), all));
        assert!(
            !tx_header_allowed(&hdr(2, 0), all),
            "DATA_VALID is receive-only"
        );
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Where a test puts a mock queue's used ring: clear of its avail
    /// ring, which the mock's own layout overlaps from 10 entries on.
    fn used_ring(q: &MockSplitQueue<GuestMemoryMmap>) -> GuestAddress {
        q.start().unchecked_add(0x1000)
    }

    /// A queue over a mock's descriptor table and avail ring, with its
    /// used ring at `used_ring`.
    fn queue(q: &MockSplitQueue<GuestMemoryMmap>) -> Queue {
        let mut queue: Queue = q.create_queue().unwrap();
        let used = used_ring(q).raw_value();
        queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        queue
    }

    fn used(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let at = used_ring(q).unchecked_add(4 + 8 * i as u64);
        let id: u32 = m.read_obj(at).unwrap();
        let len: u32 = m.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    fn used_idx(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
        m.read_obj(used_ring(q).unchecked_add(2)).unwrap()
    }

    fn read(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn num_buffers(m: &GuestMemoryMmap, hdr: u64) -> u16 {
        m.read_obj::<u16>(GuestAddress(hdr + 10)).unwrap()
    }

    /// `used_event` (driver → device) of a mock queue.
    fn set_used_event(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, size: u64, v: u16) {
        m.write_obj(v, q.avail_addr().unchecked_add(4 + 2 * size))
            .unwrap();
    }

    /// `avail_event` (device → driver) of a mock queue.
    fn avail_event(m: &GuestMemoryMmap, q: &MockSplitQueue<GuestMemoryMmap>, size: u64) -> u16 {
        m.read_obj(used_ring(q).unchecked_add(4 + 8 * size))
            .unwrap()
    }

    /// Frames a test hands the device as the TAP would: read into guest
    /// segments (what does not fit is cut, the full length is returned)
    /// or into the VMM's buffer; counts reads of each kind.
    #[derive(Default)]
    struct Frames {
        queue: RefCell<VecDeque<Vec<u8>>>,
        direct: Cell<usize>,
        bounced: Cell<usize>,
        /// If set, its status register at each read.
        irq: Option<Interrupt>,
        irq_seen: RefCell<Vec<u32>>,
    }

    impl Frames {
        fn of(frames: &[Vec<u8>]) -> Self {
            let f = Frames::default();
            f.queue.borrow_mut().extend(frames.iter().cloned());
            f
        }

        fn left(&self) -> usize {
            self.queue.borrow().len()
        }

        fn note_irq(&self) {
            if let Some(i) = &self.irq {
                self.irq_seen.borrow_mut().push(i.status());
            }
        }
    }

    impl FrameSource for Frames {
        fn read_into(
            &self,
            mem: &GuestMemoryMmap,
            segments: &[(GuestAddress, u32)],
        ) -> io::Result<usize> {
            let f = self
                .queue
                .borrow_mut()
                .pop_front()
                .ok_or(io::ErrorKind::WouldBlock)?;
            self.note_irq();
            self.direct.set(self.direct.get() + 1);
            let mut off = 0;
            for &(addr, len) in segments {
                let n = (len as usize).min(f.len() - off);
                mem.write_slice(&f[off..off + n], addr).unwrap();
                off += n;
            }
            Ok(f.len())
        }

        fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
            let f = self
                .queue
                .borrow_mut()
                .pop_front()
                .ok_or(io::ErrorKind::WouldBlock)?;
            self.note_irq();
            self.bounced.set(self.bounced.get() + 1);
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Ok(f.len())
        }
    }

    /// Frames the device sent, by length.
    #[derive(Default)]
    struct Sent(RefCell<Vec<u32>>);

    impl FrameSink for Sent {
        fn write(&self, _: &GuestMemoryMmap, frame: &TxFrame) -> io::Result<usize> {
            self.0.borrow_mut().push(frame.len);
            Ok(frame.len as usize)
        }
    }

    fn rx_run(a: &mut Active, rx: &mut RxState, src: &Frames) -> (bool, NetMetrics) {
        let mut m = NetMetrics::default();
        let again = receive(a, rx, &mut m, src);
        (again, m)
    }

    #[test]
    fn rx_with_no_buffers_leaves_frames_in_the_tap() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, irq) = active_with(&m, &rxq, true);
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(100)]);
        let (again, met) = rx_run(&mut a, &mut rx, &src);
        assert!(!again);
        assert!(rx.waiting, "waits for an RX kick");
        assert_eq!(src.left(), 1, "nothing read");
        assert_eq!(met, NetMetrics::default());
        assert_eq!(used_idx(&m, &rxq), 0);
        assert!(irq.read().is_err(), "no interrupt");
        // Buffers and a kick: the frame comes through.
        rxq.add_desc_chains(&linked(&[(A, 2048, W)]), 0).unwrap();
        rx.waiting = false;
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(used(&m, &rxq, 0), (0, 100));
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn rx_reads_straight_into_mergeable_buffers_and_keeps_the_rest() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 32);
        for i in 0..20u16 {
            let addr = A + u64::from(i) * 0x2000;
            rxq.add_desc_chains(&linked(&[(addr, 4096, W)]), i).unwrap();
        }
        let (mut a, irq) = active_with(&m, &rxq, true);
        let mut rx = RxState::new();
        let (f1, f2) = (frame(10_000), frame(3000));
        let src = Frames::of(&[f1.clone(), f2.clone()]);
        let (again, met) = rx_run(&mut a, &mut rx, &src);
        assert!(!again);
        assert_eq!((src.direct.get(), src.bounced.get()), (2, 0), "no copy");
        assert_eq!(met.rx_frames, 2);
        assert_eq!(met.rx_bytes, (10_000 + 3000 - 2 * VNET_HDR_LEN) as u64);
        // Only the buffers the frames reached are used, in order.
        assert_eq!(used_idx(&m, &rxq), 4);
        assert_eq!(used(&m, &rxq, 0), (0, 4096));
        assert_eq!(used(&m, &rxq, 1), (1, 4096));
        assert_eq!(used(&m, &rxq, 2), (2, 10_000 - 8192));
        assert_eq!(used(&m, &rxq, 3), (3, 3000));
        assert_eq!(num_buffers(&m, A), 3);
        assert_eq!(read(&m, A + 0x4000, 10_000 - 8192), f1[8192..]);
        assert_eq!(read(&m, A + 12, 100), f1[12..112]);
        assert_eq!(num_buffers(&m, A + 3 * 0x2000), 1);
        assert_eq!(read(&m, A + 3 * 0x2000 + 12, 2988), f2[12..]);
        // The rest stay held for later frames, not returned.
        assert_eq!(rx.bufs.len(), 16);
        assert!(!rx.waiting);
        assert_eq!(irq.read().unwrap(), 1, "one interrupt for the batch");
        // The next frame starts in the next held buffer.
        let src = Frames::of(&[frame(5000)]);
        rx_run(&mut a, &mut rx, &src);
        assert_eq!(used(&m, &rxq, 4), (4, 4096));
        assert_eq!(used(&m, &rxq, 5), (5, 904));
        assert_eq!(num_buffers(&m, A + 4 * 0x2000), 2);
    }

    #[test]
    fn rx_without_mergeable_buffers_drops_a_frame_larger_than_the_chain() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1526, W)]), 0).unwrap();
        let (mut a, _) = active_with(&m, &rxq, false);
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(4000), frame(600)]);
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_dropped, 1);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(src.direct.get(), 2);
        // The chain was kept for the frame that fits.
        assert_eq!(used_idx(&m, &rxq), 1);
        assert_eq!(used(&m, &rxq, 0), (0, 600));
        assert_eq!(num_buffers(&m, A), 1);
        assert!(rx.waiting, "out of buffers");
    }

    #[test]
    fn rx_frame_larger_than_a_full_ring_is_dropped() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 4);
        for i in 0..4u16 {
            rxq.add_desc_chains(&linked(&[(A + u64::from(i) * 0x1000, 100, W)]), i)
                .unwrap();
        }
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(1000), frame(150)]);
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_dropped, 1);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(src.direct.get(), 2, "a full ring is read into directly");
        assert_eq!(used_idx(&m, &rxq), 2);
        assert_eq!(num_buffers(&m, A), 2);
        assert_eq!(rx.bufs.len(), 2);
    }

    #[test]
    fn rx_copies_when_the_guest_posted_less_than_the_largest_frame() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1000, W)]), 0).unwrap();
        rxq.add_desc_chains(&linked(&[(B, 1000, W)]), 1).unwrap();
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut rx = RxState::new();
        let f = frame(2500);
        let src = Frames::of(&[frame(1500), f.clone()]);
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(used(&m, &rxq, 0), (0, 1000));
        assert_eq!(used(&m, &rxq, 1), (1, 500));
        assert_eq!(num_buffers(&m, A), 2);
        // Out of buffers: the second frame stays in the TAP.
        assert!(rx.waiting);
        assert_eq!((rx.pending, src.left()), (0, 1));
        // Too little room for it: it waits in the VMM.
        rxq.add_desc_chains(&linked(&[(B + 0x1_0000, 1000, W)]), 2)
            .unwrap();
        rx.waiting = false;
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 0);
        assert_eq!((rx.pending, rx.waiting, src.left()), (2500, true, 0));
        rxq.add_desc_chains(&linked(&[(B + 0x2_0000, 1000, W)]), 3)
            .unwrap();
        rxq.add_desc_chains(&linked(&[(B + 0x3_0000, 1000, W)]), 4)
            .unwrap();
        rx.waiting = false;
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(used(&m, &rxq, 2), (2, 1000));
        assert_eq!(used(&m, &rxq, 3), (3, 1000));
        assert_eq!(used(&m, &rxq, 4), (4, 500));
        assert_eq!(num_buffers(&m, B + 0x1_0000), 3);
        assert_eq!(read(&m, B + 0x3_0000, 500), f[2000..]);
        assert_eq!((src.direct.get(), src.bounced.get()), (0, 2));
        assert_eq!(rx.pending, 0);
    }

    #[test]
    fn rx_malformed_chains_go_to_the_used_ring_between_frames() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1000, W)]), 0).unwrap();
        rxq.add_desc_chains(&linked(&[(B, 1000, 0)]), 1).unwrap(); // read-only
        rxq.add_desc_chains(&linked(&[(A, 8, W)]), 2).unwrap(); // no room for a header
        rxq.add_desc_chains(&linked(&[(B + 0x1_0000, 1000, W)]), 3)
            .unwrap();
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(1500)]);
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_malformed, 2);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(used(&m, &rxq, 0), (1, 0));
        assert_eq!(used(&m, &rxq, 1), (2, 0));
        assert_eq!(used(&m, &rxq, 2), (0, 1000));
        assert_eq!(used(&m, &rxq, 3), (3, 500));
        assert_eq!(num_buffers(&m, A), 2);
    }

    #[test]
    fn rx_header_split_over_descriptors_gets_num_buffers() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 8, W), (B, 2000, W)]), 0)
            .unwrap();
        let (mut a, _) = active_with(&m, &rxq, false);
        let mut rx = RxState::new();
        let f = frame(500);
        let src = Frames::of(std::slice::from_ref(&f));
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(used(&m, &rxq, 0), (0, 500));
        assert_eq!(read(&m, A, 8), f[..8]);
        assert_eq!(m.read_obj::<u16>(GuestAddress(B + 2)).unwrap(), 1);
        assert_eq!(read(&m, B + 4, 488), f[12..]);
    }

    #[test]
    fn rx_budget_bounds_one_round() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 100, W)]), 0).unwrap();
        let (mut a, _) = active_with(&m, &rxq, false);
        let mut rx = RxState::new();
        let src = Frames::of(&vec![frame(4000); BUDGET + 10]);
        let (again, met) = rx_run(&mut a, &mut rx, &src);
        assert!(again, "more to do: the caller schedules another round");
        assert_eq!(met.rx_dropped, BUDGET as u64);
        assert_eq!(src.left(), 10);
    }

    #[test]
    fn rx_lying_avail_index_does_not_spin() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, _) = active_with(&m, &rxq, true);
        // More entries than the ring has.
        m.write_obj(1000u16, rxq.avail_addr().unchecked_add(2))
            .unwrap();
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(100)]);
        let (again, met) = rx_run(&mut a, &mut rx, &src);
        assert!(!again && rx.waiting);
        assert_eq!(met, NetMetrics::default());
        assert_eq!(src.left(), 1);
    }

    /// Posts `n` receive buffers of 2000 bytes, one chain each, 4 KiB apart.
    fn post_rx_buffers(rxq: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
        for i in 0..n {
            let addr = A + u64::from(i) * 0x1000;
            rxq.add_desc_chains(&linked(&[(addr, 2000, W)]), i).unwrap();
        }
    }

    #[test]
    fn rx_event_idx_suppresses_interrupts_and_kicks() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        post_rx_buffers(&rxq, 8);
        let acked = features::MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX;
        let (mut a, irq) = active_acked(&m, &rxq, acked);
        let mut rx = RxState::new();
        // The driver wants an interrupt once the used index passes 5.
        set_used_event(&m, &rxq, 16, 5);
        let src = Frames::of(&vec![frame(100); 3]);
        rx_run(&mut a, &mut rx, &src);
        assert_eq!(used_idx(&m, &rxq), 3);
        assert!(irq.read().is_err(), "used index 3 has not passed 5");
        assert!(!rx.waiting);
        assert_eq!(avail_event(&m, &rxq, 16), 0, "no kicks asked for");
        let src = Frames::of(&vec![frame(100); 3]);
        rx_run(&mut a, &mut rx, &src);
        assert_eq!(used_idx(&m, &rxq), 6);
        assert_eq!(irq.read().unwrap(), 1);
        // Out of buffers: a kick is asked for at the next entry.
        let src = Frames::of(&vec![frame(100); 3]);
        rx_run(&mut a, &mut rx, &src);
        assert_eq!(used_idx(&m, &rxq), 8);
        assert!(rx.waiting);
        assert_eq!(avail_event(&m, &rxq, 16), 8);
        assert_eq!(src.left(), 1);
    }

    #[test]
    fn rx_event_idx_interrupts_once_at_the_end_of_the_batch() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        post_rx_buffers(&rxq, 8);
        let acked = features::MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX;
        let (mut a, irq) = active_acked(&m, &rxq, acked);
        let mut rx = RxState::new();
        // used_event 0: the first frame passes it, but the interrupt waits
        // for the batch's end. Interrupting at once (as QEMU does) measured
        // slower here: the woken vCPU preempts the device thread on the
        // test machine's single CPU, and the two ping-pong per frame.
        let mut src = Frames::of(&vec![frame(100); 3]);
        src.irq = Some(a.interrupt.clone());
        rx_run(&mut a, &mut rx, &src);
        assert_eq!(*src.irq_seen.borrow(), vec![0, 0, 0]);
        assert_eq!(irq.read().unwrap(), 1, "once");
    }

    #[test]
    fn rx_buffers_posted_while_kicks_were_off_are_found() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let acked = features::MRG_RXBUF | VIRTIO_RING_F_EVENT_IDX;
        let (mut a, _) = active_acked(&m, &rxq, acked);
        let mut rx = RxState::new();
        let src = Frames::of(&[frame(100)]);
        rx_run(&mut a, &mut rx, &src);
        assert!(rx.waiting);
        // The driver posts while the device is busy: avail_event says 0,
        // so the driver kicked; a device that wakes finds the buffer.
        rxq.add_desc_chains(&linked(&[(A, 2000, W)]), 0).unwrap();
        rx.waiting = false;
        let (_, met) = rx_run(&mut a, &mut rx, &src);
        assert_eq!(met.rx_frames, 1);
        assert_eq!(avail_event(&m, &rxq, 16), 1);
    }

    fn tx_chain(m: &GuestMemoryMmap, txq: &MockSplitQueue<GuestMemoryMmap>, i: u16) {
        let addr = B + u64::from(i) * 0x1000;
        m.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(addr))
            .unwrap();
        txq.add_desc_chains(&linked(&[(addr, 72, 0)]), i).unwrap();
    }

    #[test]
    fn tx_event_idx_moves_avail_event_and_suppresses_interrupts() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, irq) = active_acked(&m, &rxq, VIRTIO_RING_F_EVENT_IDX);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
        for i in 0..3 {
            tx_chain(&m, &txq, i);
        }
        let sink = Sent::default();
        let mut met = NetMetrics::default();
        assert!(!transmit(&mut a, &mut met, &sink));
        assert_eq!(*sink.0.borrow(), vec![72, 72, 72]);
        assert_eq!(met.tx_frames, 3);
        assert_eq!(avail_event(&m, &txq, 16), 3, "kick at the next entry");
        assert_eq!(irq.read().unwrap(), 1, "used_event 0 was passed");
        set_used_event(&m, &txq, 16, 10);
        for i in 3..5 {
            tx_chain(&m, &txq, i);
        }
        transmit(&mut a, &mut met, &sink);
        assert_eq!(met.tx_frames, 5);
        assert_eq!(used_idx(&m, &txq), 5);
        assert_eq!(avail_event(&m, &txq, 16), 5);
        assert!(irq.read().is_err(), "used index 5 has not passed 10");
    }

    #[test]
    fn tx_without_event_idx_interrupts_every_batch() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, irq) = active_acked(&m, &rxq, 0);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
        tx_chain(&m, &txq, 0);
        set_used_event(&m, &txq, 16, 10);
        let sink = Sent::default();
        let mut met = NetMetrics::default();
        transmit(&mut a, &mut met, &sink);
        assert_eq!(met.tx_frames, 1);
        assert_eq!(irq.read().unwrap(), 1, "used_event means nothing");
        assert_eq!(avail_event(&m, &txq, 16), 0);
    }

    #[test]
    fn tx_lying_avail_index_does_not_spin() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, irq) = active_acked(&m, &rxq, VIRTIO_RING_F_EVENT_IDX);
        let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
        m.write_obj(1000u16, txq.avail_addr().unchecked_add(2))
            .unwrap();
        let sink = Sent::default();
        let mut met = NetMetrics::default();
        assert!(!transmit(&mut a, &mut met, &sink));
        assert_eq!(met, NetMetrics::default());
        assert!(irq.read().is_err());
    }

    fn arp_request(mac: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[10, 0, 2, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 2, 1]);
        f
    }

    /// Runs `f` on a thread in a private network namespace holding the TAP
    /// `cctap0` (10.0.2.1/24, up, no IPv6) with a device attached to it and
    /// the link up. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN: fails, saying
    /// so, without them (the tests run as root).
    fn with_real_tap(f: impl FnOnce(Net, MacAddr) + Send + 'static) {
        let t = std::thread::spawn(move || {
            // SAFETY: moves only this test thread into a new network
            // namespace; no memory is involved.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                r,
                0,
                "the real-TAP tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create a network namespace: {}",
                std::io::Error::last_os_error()
            );
            let ip = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            ip(&["tuntap", "add", "dev", "cctap0", "mode", "tap"]);
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/cctap0/disable_ipv6", "1");
            ip(&["addr", "add", "10.0.2.1/24", "dev", "cctap0"]);
            ip(&["link", "set", "cctap0", "up"]);
            let mac = MacAddr::parse("02:00:00:00:00:02").unwrap();
            let net = Net::with_tap(Tap::open("cctap0").unwrap(), mac).unwrap();
            // Attaching turns the carrier on; until the kernel's link watch
            // has run (up to a second later) the TAP drops what it sends.
            let start = std::time::Instant::now();
            loop {
                let out = std::process::Command::new("ip")
                    .args(["-o", "link", "show", "dev", "cctap0"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
                    break;
                }
                assert!(start.elapsed() < std::time::Duration::from_secs(5));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            f(net, mac);
        });
        t.join().unwrap();
    }

    /// A frame larger than one receive buffer goes from the TAP straight
    /// into several guest buffers (the ring is full, so the device reads
    /// into it directly), with `num_buffers` saying how many.
    #[test]
    fn large_frame_from_a_real_tap_spans_mergeable_buffers() {
        with_real_tap(|mut net, mac| {
            let run = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            // A 9000-byte MTU and a known neighbour: the kernel sends an
            // 8000-byte datagram as one frame, with no ARP first.
            run(&["link", "set", "cctap0", "mtu", "9000"]);
            let lladdr = mac.to_string();
            run(&[
                "neigh", "replace", "10.0.2.2", "lladdr", &lladdr, "dev", "cctap0",
            ]);
            let m = mem();
            let rxq = MockSplitQueue::new(&m, 16);
            let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
            for i in 0..16u16 {
                rxq.add_desc_chains(&linked(&[(A + u64::from(i) * 0x1000, 2048, W)]), i)
                    .unwrap();
            }
            let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            net.activate(
                m.clone(),
                Interrupt::new(irq),
                vec![queue(&rxq), queue(&txq)],
                crate::devices::virtio::VIRTIO_F_VERSION_1 | features::MRG_RXBUF,
            )
            .unwrap();
            let payload: Vec<u8> = (0..8000u32).map(|i| (i % 253) as u8).collect();
            let sock = std::net::UdpSocket::bind("10.0.2.1:0").unwrap();
            sock.send_to(&payload, "10.0.2.2:9").unwrap();
            let start = std::time::Instant::now();
            let frame_len = VNET_HDR_LEN + 14 + 20 + 8 + 8000;
            let mut found = false;
            while !found && start.elapsed() < std::time::Duration::from_secs(5) {
                net.process_rx();
                let mut next = 0;
                while next < usize::from(used_idx(&m, &rxq)) {
                    let (id, len) = used(&m, &rxq, next);
                    let at = A + u64::from(id) * 0x1000;
                    let n = usize::from(num_buffers(&m, at));
                    if len as usize == 2048 && n == 4 {
                        assert_eq!(used(&m, &rxq, next + 3).1 as usize, frame_len - 3 * 2048);
                        let mut f = Vec::new();
                        for k in 0..4 {
                            let (id, len) = used(&m, &rxq, next + k);
                            f.extend(read(&m, A + u64::from(id) * 0x1000, len as usize));
                        }
                        assert_eq!(f.len(), frame_len);
                        assert_eq!(&f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[8, 0]);
                        assert_eq!(&f[frame_len - 8000..], &payload[..]);
                        found = true;
                    }
                    next += n.max(1);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(found, "no 4-buffer frame: {:?}", net.metrics);
        });
    }

    /// A frame through a real TAP: the guest's ARP request goes out on TX
    /// and the kernel's reply comes back on RX.
    #[test]
    fn arp_round_trip_through_a_real_tap() {
        with_real_tap(|mut net, mac| {
            let m = mem();
            let rxq = MockSplitQueue::new(&m, 16);
            let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
            for i in 0..8u16 {
                rxq.add_desc_chains(&linked(&[(A + u64::from(i) * 0x1000, 2048, W)]), i)
                    .unwrap();
            }
            let req = arp_request(mac.bytes());
            m.write_slice(&req, GuestAddress(B)).unwrap();
            // A write-only descriptor, the request, a buffer outside memory.
            txq.add_desc_chains(&linked(&[(B, req.len() as u32, W)]), 0)
                .unwrap();
            txq.add_desc_chains(&linked(&[(B, req.len() as u32, 0)]), 1)
                .unwrap();
            txq.add_desc_chains(&linked(&[(0xfff_0000, 64, 0)]), 2)
                .unwrap();
            let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            net.activate(
                m.clone(),
                Interrupt::new(irq),
                vec![queue(&rxq), queue(&txq)],
                crate::devices::virtio::VIRTIO_F_VERSION_1 | features::MRG_RXBUF,
            )
            .unwrap();
            net.process_tx();
            assert_eq!(net.metrics.tx_frames, 1, "{:?}", net.metrics);
            assert_eq!(net.metrics.tx_malformed, 2, "{:?}", net.metrics);
            assert_eq!(used_idx(&m, &txq), 3);
            for i in 0..3 {
                assert_eq!(used(&m, &txq, i), (i as u32, 0));
            }
            let start = std::time::Instant::now();
            let mut found = false;
            while !found && start.elapsed() < std::time::Duration::from_secs(5) {
                net.process_rx();
                for i in 0..usize::from(used_idx(&m, &rxq)).min(8) {
                    let (id, len) = used(&m, &rxq, i);
                    let mut f = vec![0u8; len as usize];
                    m.read_slice(&mut f, GuestAddress(A + u64::from(id) * 0x1000))
                        .unwrap();
                    let eth = &f[VNET_HDR_LEN..];
                    if eth.len() >= 42 && eth[12..14] == [8, 6] && eth[20..22] == [0, 2] {
                        assert_eq!(&eth[0..6], &mac.bytes());
                        assert_eq!(u16::from_le_bytes([f[10], f[11]]), 1, "num_buffers");
                        assert_eq!(&eth[28..32], &[10, 0, 2, 1]);
                        found = true;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(found, "no ARP reply: {:?}", net.metrics);
        });
    }

    /// With no receive buffers the TAP leaves the event loop and the frame
    /// waits; the guest's RX notification brings both back.
    #[test]
    fn tap_is_not_read_while_the_guest_has_no_buffers() {
        with_real_tap(|mut net, _| {
            let m = mem();
            let rxq = MockSplitQueue::new(&m, 16);
            let txq = MockSplitQueue::create(&m, GuestAddress(0x8_0000), 16);
            assert!(!net.wants_tap(), "inactive");
            let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            net.activate(
                m.clone(),
                Interrupt::new(irq),
                vec![queue(&rxq), queue(&txq)],
                crate::devices::virtio::VIRTIO_F_VERSION_1 | features::MRG_RXBUF,
            )
            .unwrap();
            assert!(net.wants_tap());
            // Make the kernel send a frame to the guest: an ARP request for
            // 10.0.2.2, the destination of a datagram.
            let sock = std::net::UdpSocket::bind("10.0.2.1:0").unwrap();
            sock.send_to(b"x", "10.0.2.2:9").unwrap();
            net.process_rx();
            assert!(net.rx.waiting && !net.wants_tap(), "TAP left alone");
            // The kernel queues its ARP request on the TAP; nothing reads it.
            std::thread::sleep(std::time::Duration::from_millis(200));
            net.process_rx();
            assert_eq!(net.rx.pending, 0, "{:?}", net.metrics);
            assert_eq!(net.metrics.rx_frames, 0);
            rxq.add_desc_chains(&linked(&[(A, 2048, W)]), 0).unwrap();
            rxq.add_desc_chains(&linked(&[(B, 2048, W)]), 1).unwrap();
            net.rx_notified();
            assert!(net.wants_tap(), "TAP watched again (one buffer left)");
            assert_eq!(net.metrics.rx_frames, 1, "{:?}", net.metrics);
            assert_eq!(num_buffers(&m, A), 1);
            let (_, len) = used(&m, &rxq, 0);
            let mut f = vec![0u8; len as usize];
            m.read_slice(&mut f, GuestAddress(A)).unwrap();
            assert_eq!(&f[VNET_HDR_LEN..VNET_HDR_LEN + 6], &[0xff; 6]);
            assert_eq!(&f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[8, 6]);
            net.reset();
            assert!(!net.wants_tap(), "reset");
        });
    }
}
