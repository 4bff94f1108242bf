//! virtio-net device state: the TAP, the two queues, the MAC in config
//! space, feature negotiation (offloads mapped onto TUNSETOFFLOAD), and
//! moving frames between the queues and the TAP. Whether the TAP is in the
//! event loop is decided here (`wants_tap`) and applied by the event
//! handler, the only holder of the loop's `EventOps`.

use std::io;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::request::{
    buffers_needed, parse_rx, parse_tx, GsoType, RxBuffer, VnetHdr, HDR_F_NEEDS_CSUM,
};
use super::tap::{Tap, TapError, OFFLOAD_CSUM, OFFLOAD_TSO4, OFFLOAD_TSO6};
use super::{MacAddr, MAX_FRAME_LEN, QUEUE_SIZE, VNET_HDR_LEN};
use crate::devices::virtio::{
    expect_queues, read_config_bytes, ActivateError, Interrupt, VirtioDevice, INT_VRING,
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
/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS_OFFSET: usize = 10;

/// How a net device is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Name of an existing TAP device.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: MacAddr,
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

/// What became of one frame offered to the receive queue.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// In guest buffers.
    Delivered,
    /// Dropped (counted); any chains consumed are on the used ring.
    Dropped,
    /// The guest has not given enough buffers yet; nothing was consumed.
    NoBuffers,
}

/// A virtio-net device on a TAP.
pub struct Net {
    pub(super) tap: Tap,
    pub(super) queue_evts: Vec<EventFd>,
    active: Option<Active>,
    config_space: [u8; 6],
    features: u64,
    /// A frame read from the TAP (header first), `rx_len` bytes long.
    rx_buf: Vec<u8>,
    /// Length of the frame in `rx_buf` waiting for guest buffers (0: none).
    rx_len: usize,
    /// The guest has no room: the TAP is not read until it notifies RX.
    pub(super) rx_waiting: bool,
    /// The TAP failed; it is no longer read.
    tap_broken: bool,
    /// Whether the TAP is registered with the event loop (event handler's).
    pub(super) tap_registered: bool,
    /// Counters.
    pub metrics: NetMetrics,
}

impl Net {
    /// Attaches to the TAP described by `cfg`.
    pub fn new(cfg: &NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&cfg.tap)?;
        Net::with_tap(tap, cfg.mac)
    }

    /// A device on an already attached TAP.
    pub fn with_tap(tap: Tap, mac: MacAddr) -> Result<Self, NetError> {
        let mut features = features::MAC | features::MRG_RXBUF;
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
            rx_buf: vec![0u8; VNET_HDR_LEN + MAX_FRAME_LEN],
            rx_len: 0,
            rx_waiting: false,
            tap_broken: false,
            tap_registered: false,
            metrics: NetMetrics::default(),
        })
    }

    /// Whether the TAP should be in the event loop: the device runs, the
    /// guest has room, and the TAP works.
    pub(super) fn wants_tap(&self) -> bool {
        self.active.is_some() && !self.rx_waiting && !self.tap_broken
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
        let mem = &active.mem;
        let q = &mut active.queues[TX];
        let m = &mut self.metrics;
        let mut used_any = false;
        let mut budget = BUDGET;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match parse_tx(chain) {
                Ok(frame) if !tx_header_allowed(&frame.hdr, active.acked) => m.tx_malformed += 1,
                Ok(frame) => match self.tap.write_frame(mem, &frame) {
                    Ok(_) => {
                        m.tx_frames += 1;
                        m.tx_bytes += u64::from(frame.len) - VNET_HDR_LEN as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => m.tx_dropped += 1,
                    Err(_) => m.tx_errors += 1,
                },
                Err(_) => m.tx_malformed += 1,
            }
            if q.add_used(mem, head, 0).is_err() {
                // The used ring is unusable: stop rather than spin.
                break;
            }
            used_any = true;
            budget -= 1;
            if budget == 0 {
                // More may be queued: come back after other events.
                let _ = self.queue_evts[TX].write(1);
                break;
            }
        }
        if used_any && q.needs_notification(mem).unwrap_or(true) {
            active.interrupt.trigger(INT_VRING);
        }
    }

    /// Moves frames from the TAP into the guest's receive buffers until the
    /// TAP is empty, the guest is out of room, or the budget is spent.
    pub(super) fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut used_any = false;
        let mut budget = BUDGET;
        loop {
            if self.rx_len == 0 {
                if budget == 0 || self.tap_broken {
                    // Level-triggered: a TAP with more to read fires again.
                    break;
                }
                match self.tap.read_frame(&mut self.rx_buf) {
                    Ok(n) if n < VNET_HDR_LEN || n > self.rx_buf.len() => {
                        self.metrics.rx_dropped += 1;
                        budget -= 1;
                        continue;
                    }
                    Ok(n) => {
                        self.rx_len = n;
                        budget -= 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.metrics.rx_errors += 1;
                        self.tap_broken = true;
                        break;
                    }
                }
            }
            let frame = &mut self.rx_buf[..self.rx_len];
            let (outcome, consumed) = deliver(active, frame, &mut self.metrics);
            used_any |= consumed;
            match outcome {
                Delivery::Delivered | Delivery::Dropped => self.rx_len = 0,
                Delivery::NoBuffers => {
                    // Keep the frame; stop reading the TAP until the guest
                    // notifies RX (it always does: notifications are never
                    // suppressed).
                    self.rx_waiting = true;
                    break;
                }
            }
        }
        let q = &mut active.queues[RX];
        if used_any && q.needs_notification(&active.mem).unwrap_or(true) {
            active.interrupt.trigger(INT_VRING);
        }
    }

    /// The guest gave receive buffers.
    pub(super) fn rx_notified(&mut self) {
        self.rx_waiting = false;
        self.process_rx();
    }
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

/// Puts one frame (header first) into the guest's receive buffers. Chains
/// are parsed before anything is written: if the guest has not given
/// enough room yet, every chain taken is handed back to the available ring
/// untouched. Malformed chains go to the used ring with length 0 ahead of
/// the frame's, so a frame's buffers are always consecutive there. Returns
/// the outcome and whether anything went to the used ring.
fn deliver(active: &mut Active, frame: &mut [u8], m: &mut NetMetrics) -> (Delivery, bool) {
    let mem = &active.mem;
    let q = &mut active.queues[RX];
    let mut bufs: Vec<RxBuffer> = Vec::new();
    let mut bad: Vec<u16> = Vec::new();
    let mut used_any = false;
    let count = loop {
        if let Some(k) = buffers_needed(&bufs, frame.len()) {
            break k;
        }
        if active.acked & features::MRG_RXBUF == 0 && !bufs.is_empty() {
            // One buffer per frame and this one is too small: the guest
            // never said it takes frames this large. Drop the frame, keep
            // the buffer for the next one.
            rewind(q, bufs.len() + bad.len());
            m.rx_dropped += 1;
            return (Delivery::Dropped, used_any);
        }
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            if bufs.len() + bad.len() >= usize::from(q.size()) {
                // Every buffer the ring can hold is not enough.
                rewind(q, bufs.len() + bad.len());
                m.rx_dropped += 1;
                return (Delivery::Dropped, used_any);
            }
            rewind(q, bufs.len() + bad.len());
            return (Delivery::NoBuffers, used_any);
        };
        let head = chain.head_index();
        match parse_rx(chain) {
            Ok(b) => bufs.push(b),
            Err(_) if bufs.is_empty() => {
                // Nothing of this frame taken yet: hand it back now.
                m.rx_malformed += 1;
                if q.add_used(mem, head, 0).is_err() {
                    return (Delivery::Dropped, used_any);
                }
                used_any = true;
            }
            Err(_) => bad.push(head),
        }
    };
    for head in bad {
        m.rx_malformed += 1;
        let _ = q.add_used(mem, head, 0);
    }
    // num_buffers: 1 without mergeable buffers; count <= queue size.
    let num = u16::try_from(count).unwrap_or(u16::MAX);
    frame[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&num.to_le_bytes());
    let mut off = 0usize;
    for b in &bufs[..count] {
        let mut written = 0u32;
        for &(addr, len) in &b.segments {
            let n = (len as usize).min(frame.len() - off);
            if n == 0 {
                break;
            }
            // The range was checked when the chain was parsed.
            if mem.write_slice(&frame[off..off + n], addr).is_err() {
                break;
            }
            off += n;
            written += n as u32;
        }
        let _ = q.add_used(mem, b.head, written);
    }
    m.rx_frames += 1;
    m.rx_bytes += (frame.len() - VNET_HDR_LEN) as u64;
    (Delivery::Delivered, true)
}

/// Hands the last `n` chains taken back to the available ring.
fn rewind(q: &mut Queue, n: usize) {
    for _ in 0..n {
        q.go_to_previous_position();
    }
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
        let queues = expect_queues(queues, 2)?;
        self.tap
            .set_offload(Self::tap_offloads(acked))
            .map_err(|e| ActivateError::Backend(format!("TUNSETOFFLOAD: {e}")))?;
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
            acked,
        });
        self.rx_len = 0;
        self.rx_waiting = false;
        // Wake the event loop so that it starts watching the TAP.
        let _ = self.queue_evts[RX].write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx_len = 0;
        self.rx_waiting = false;
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
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

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
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let txq = MockSplitQueue::create(m, GuestAddress(0x8_0000), 16);
        (
            Active {
                mem: m.clone(),
                interrupt: Interrupt::new(irq.try_clone().unwrap()),
                queues: vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
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

    fn used(q: &MockSplitQueue<GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let e = q.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    #[test]
    fn rx_with_no_buffers_keeps_the_frame() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut met = NetMetrics::default();
        let mut f = frame(100);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::NoBuffers, false)
        );
        assert_eq!(met, NetMetrics::default());
        assert_eq!(rxq.used().idx().load(), 0);
    }

    #[test]
    fn rx_frame_spans_mergeable_buffers_with_num_buffers_set() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        let descs = linked(&[(A, 1000, W)]);
        rxq.add_desc_chains(&descs, 0).unwrap();
        rxq.add_desc_chains(&linked(&[(B, 1000, W)]), 1).unwrap();
        rxq.add_desc_chains(&linked(&[(B + 0x1_0000, 1000, W)]), 2)
            .unwrap();
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut met = NetMetrics::default();
        let mut f = frame(2500);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(rxq.used().idx().load(), 3);
        assert_eq!(used(&rxq, 0), (0, 1000));
        assert_eq!(used(&rxq, 1), (1, 1000));
        assert_eq!(used(&rxq, 2), (2, 500));
        let mut hdr = [0u8; 12];
        m.read_slice(&mut hdr, GuestAddress(A)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3);
        let mut tail = vec![0u8; 500];
        m.read_slice(&mut tail, GuestAddress(B + 0x1_0000)).unwrap();
        assert_eq!(tail, f[2000..]);
    }

    #[test]
    fn rx_not_enough_mergeable_buffers_takes_nothing() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1000, W)]), 0).unwrap();
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut met = NetMetrics::default();
        let mut f = frame(2500);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::NoBuffers, false)
        );
        assert_eq!(rxq.used().idx().load(), 0);
        // The chain is still available: more buffers make it fit.
        rxq.add_desc_chains(&linked(&[(B, 2000, W)]), 1).unwrap();
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(used(&rxq, 0), (0, 1000));
        assert_eq!(used(&rxq, 1), (1, 1500));
    }

    #[test]
    fn rx_chain_too_small_for_the_header_is_returned_empty() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 8, W)]), 0).unwrap();
        rxq.add_desc_chains(&linked(&[(B, 2000, W)]), 1).unwrap();
        let (mut a, _) = active_with(&m, &rxq, false);
        let mut met = NetMetrics::default();
        let mut f = frame(1000);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(used(&rxq, 0), (0, 0));
        assert_eq!(used(&rxq, 1), (1, 1000));
        assert_eq!(met.rx_malformed, 1);
        let mut hdr = [0u8; 12];
        m.read_slice(&mut hdr, GuestAddress(B)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
    }

    #[test]
    fn rx_frame_larger_than_a_single_buffer_is_dropped_and_the_buffer_kept() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1526, W)]), 0).unwrap();
        let (mut a, _) = active_with(&m, &rxq, false);
        let mut met = NetMetrics::default();
        let mut big = frame(4000);
        assert_eq!(
            deliver(&mut a, &mut big, &mut met),
            (Delivery::Dropped, false)
        );
        assert_eq!(met.rx_dropped, 1);
        let mut small = frame(600);
        assert_eq!(
            deliver(&mut a, &mut small, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(used(&rxq, 0), (0, 600));
    }

    #[test]
    fn rx_malformed_chain_inside_a_frame_goes_first_on_the_used_ring() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 16);
        rxq.add_desc_chains(&linked(&[(A, 1000, W)]), 0).unwrap();
        rxq.add_desc_chains(&linked(&[(B, 1000, 0)]), 1).unwrap(); // read-only
        rxq.add_desc_chains(&linked(&[(B + 0x1_0000, 1000, W)]), 2)
            .unwrap();
        let (mut a, _) = active_with(&m, &rxq, true);
        let mut met = NetMetrics::default();
        let mut f = frame(1500);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(used(&rxq, 0), (1, 0));
        assert_eq!(used(&rxq, 1), (0, 1000));
        assert_eq!(used(&rxq, 2), (2, 500));
        assert_eq!(met.rx_malformed, 1);
    }

    #[test]
    fn rx_ring_too_small_for_a_frame_drops_it() {
        let m = mem();
        let rxq = MockSplitQueue::new(&m, 4);
        for i in 0..4u16 {
            rxq.add_desc_chains(&linked(&[(A + u64::from(i) * 0x1000, 100, W)]), i)
                .unwrap();
        }
        let (mut a, _) = active_with(&m, &rxq, true);
        // The mock's used ring overlaps the end of a full avail ring: move it.
        a.queues[RX].set_used_ring_address(Some(0x7_0000), Some(0));
        let mut met = NetMetrics::default();
        let mut f = frame(1000);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Dropped, false)
        );
        assert_eq!(met.rx_dropped, 1);
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x7_0002)).unwrap(), 0);
        // The buffers are still there for a frame that fits.
        let mut f = frame(150);
        assert_eq!(
            deliver(&mut a, &mut f, &mut met),
            (Delivery::Delivered, true)
        );
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x7_0002)).unwrap(), 2);
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
                vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
                crate::devices::virtio::VIRTIO_F_VERSION_1 | features::MRG_RXBUF,
            )
            .unwrap();
            net.process_tx();
            assert_eq!(net.metrics.tx_frames, 1, "{:?}", net.metrics);
            assert_eq!(net.metrics.tx_malformed, 2, "{:?}", net.metrics);
            assert_eq!(txq.used().idx().load(), 3);
            for i in 0..3 {
                assert_eq!(used(&txq, i), (i as u32, 0));
            }
            let start = std::time::Instant::now();
            let mut found = false;
            while !found && start.elapsed() < std::time::Duration::from_secs(5) {
                net.process_rx();
                for i in 0..usize::from(rxq.used().idx().load()).min(8) {
                    let (id, len) = used(&rxq, i);
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
                vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
                crate::devices::virtio::VIRTIO_F_VERSION_1 | features::MRG_RXBUF,
            )
            .unwrap();
            assert!(net.wants_tap());
            // Make the kernel send a frame to the guest: an ARP request for
            // 10.0.2.2, the destination of a datagram.
            let sock = std::net::UdpSocket::bind("10.0.2.1:0").unwrap();
            sock.send_to(b"x", "10.0.2.2:9").unwrap();
            let start = std::time::Instant::now();
            while net.rx_len == 0 {
                net.process_rx();
                assert!(start.elapsed() < std::time::Duration::from_secs(5));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(net.rx_waiting && !net.wants_tap(), "TAP left alone");
            assert_eq!(net.metrics.rx_frames, 0);
            rxq.add_desc_chains(&linked(&[(A, 2048, W)]), 0).unwrap();
            net.rx_notified();
            assert!(net.wants_tap(), "TAP watched again");
            assert_eq!(net.metrics.rx_frames, 1, "{:?}", net.metrics);
            let (_, len) = used(&rxq, 0);
            let mut f = vec![0u8; len as usize];
            m.read_slice(&mut f, GuestAddress(A)).unwrap();
            assert_eq!(&f[VNET_HDR_LEN..VNET_HDR_LEN + 6], &[0xff; 6]);
            assert_eq!(&f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], &[8, 6]);
            net.reset();
            assert!(!net.wants_tap(), "reset");
        });
    }
}
