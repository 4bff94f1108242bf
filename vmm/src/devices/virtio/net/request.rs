//! Turns descriptor chains into checked frame buffers without doing any
//! I/O: a TX chain into a copy of its virtio-net header (typed, so the
//! device can hold it against the negotiated features, and copied, so the
//! guest cannot change it after the check) and the guest-memory segments
//! of the Ethernet frame after it; an RX chain into the writable segments a
//! received frame may fill. Everything the guest controls is checked here:
//! directions, addresses, lengths, overflow, and chains that do not end
//! (a loop, or a `next` past the table: the iterator stops on those while
//! the last descriptor still says NEXT).

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::{MAX_FRAME_LEN, MIN_FRAME_LEN, VNET_HDR_LEN};

/// Longest TX chain accepted: a header and a maximum-size frame.
pub const MAX_TX_LEN: u64 = (VNET_HDR_LEN + MAX_FRAME_LEN) as u64;
/// Bytes of RX buffer counted per chain; room beyond this is never used.
pub const MAX_RX_LEN: u32 = (VNET_HDR_LEN + MAX_FRAME_LEN) as u32;
/// Non-empty buffers counted per RX chain; later ones are never used
/// (Linux posts one, or 19 for a big-packet chain). Bounds what a held
/// chain costs the VMM and the iovecs of one TAP read.
pub const MAX_RX_SEGMENTS: usize = 64;

/// Why a TX chain is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// No descriptors (or an unusable indirect table).
    #[error("empty chain")]
    Empty,
    /// A device-writable descriptor in a TX chain.
    #[error("device-writable descriptor in a TX chain")]
    WriteOnly,
    /// The chain holds more than a header and a maximum-size frame.
    #[error("TX chain of more than {MAX_TX_LEN} bytes")]
    TooLong,
    /// Shorter than a header and an Ethernet header.
    #[error("TX chain of {0} bytes is shorter than a header and an Ethernet header")]
    TooShort(u32),
    /// A buffer is not inside guest memory.
    #[error("descriptor buffer {addr:#x}+{len} is outside guest memory")]
    BadAddress {
        /// Address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// The chain does not end: a loop, a `next` outside the table, or more
    /// descriptors than the queue holds.
    #[error("descriptor chain does not end")]
    Unterminated,
}

/// Why an RX chain cannot take a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// No descriptors.
    #[error("empty chain")]
    Empty,
    /// A device-readable descriptor in an RX chain.
    #[error("device-readable descriptor in an RX chain")]
    ReadOnly,
    /// A buffer is not inside guest memory.
    #[error("descriptor buffer {addr:#x}+{len} is outside guest memory")]
    BadAddress {
        /// Address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Less room than a virtio-net header.
    #[error("RX chain of {0} bytes cannot hold a virtio-net header")]
    TooSmall(u32),
    /// The chain does not end.
    #[error("descriptor chain does not end")]
    Unterminated,
}

/// `flags`: the checksum from `csum_start` on is left to the device.
pub const HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type` bit: the segments need ECN's CWR set.
pub const GSO_ECN: u8 = 0x80;

/// What segmentation a TX frame asks for (`gso_type` without the ECN bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// A single frame.
    None,
    /// TCP over IPv4, to be cut into `gso_size` segments.
    TcpV4,
    /// UDP fragmentation offload.
    Udp,
    /// TCP over IPv6.
    TcpV6,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for GsoType {
    fn from(v: u8) -> Self {
        match v {
            0 => GsoType::None,
            1 => GsoType::TcpV4,
            3 => GsoType::Udp,
            4 => GsoType::TcpV6,
            other => GsoType::Unknown(other),
        }
    }
}

/// A `virtio_net_hdr_v1` as the guest wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// Raw bytes (passed to the TAP as they are once checked).
    pub bytes: [u8; VNET_HDR_LEN],
}

impl VnetHdr {
    /// `flags`.
    pub fn flags(&self) -> u8 {
        self.bytes[0]
    }

    /// `gso_type` without the ECN bit.
    pub fn gso_type(&self) -> GsoType {
        GsoType::from(self.bytes[1] & !GSO_ECN)
    }

    /// Whether the ECN bit is set.
    pub fn gso_ecn(&self) -> bool {
        self.bytes[1] & GSO_ECN != 0
    }
}

/// One outgoing frame: its header (copied out of guest memory), then the
/// Ethernet frame in guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    /// The header.
    pub hdr: VnetHdr,
    /// Non-empty buffers of the Ethernet frame in order, each inside guest
    /// memory.
    pub segments: Vec<(GuestAddress, u32)>,
    /// Total bytes, header included (at most `MAX_TX_LEN`).
    pub len: u32,
}

/// One guest receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxBuffer {
    /// The chain's head, for the used ring.
    pub head: u16,
    /// Non-empty writable buffers in order, each inside guest memory, at
    /// most `MAX_RX_SEGMENTS` of them, together at most `MAX_RX_LEN` bytes.
    pub segments: Vec<(GuestAddress, u32)>,
    /// Bytes the segments hold.
    pub capacity: u32,
}

/// Parses one TX chain.
pub fn parse_tx<M>(chain: DescriptorChain<M>) -> Result<TxFrame, TxError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let mut segments = Vec::new();
    let mut total: u64 = 0;
    let mut last_has_next = false;
    let mut any = false;
    for d in chain.clone() {
        any = true;
        last_has_next = d.has_next();
        if d.is_write_only() {
            return Err(TxError::WriteOnly);
        }
        total += u64::from(d.len());
        if total > MAX_TX_LEN {
            return Err(TxError::TooLong);
        }
        if d.len() == 0 {
            continue;
        }
        if !mem.check_range(d.addr(), d.len() as usize, Permissions::Read) {
            return Err(TxError::BadAddress {
                addr: d.addr().raw_value(),
                len: d.len(),
            });
        }
        segments.push((d.addr(), d.len()));
    }
    if !any {
        return Err(TxError::Empty);
    }
    if last_has_next {
        return Err(TxError::Unterminated);
    }
    // total <= MAX_TX_LEN, which fits in u32.
    let len = total as u32;
    if (len as usize) < VNET_HDR_LEN + MIN_FRAME_LEN {
        return Err(TxError::TooShort(len));
    }
    // Copy the header out (it may span descriptors) and keep only what
    // follows it.
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut got = 0usize;
    let mut frame = Vec::with_capacity(segments.len());
    for (addr, seg_len) in segments {
        let take = (seg_len as usize).min(VNET_HDR_LEN - got);
        if take > 0 {
            mem.read_slice(&mut hdr[got..got + take], addr)
                .map_err(|_| TxError::BadAddress {
                    addr: addr.raw_value(),
                    len: seg_len,
                })?;
            got += take;
        }
        if take < seg_len as usize {
            // take <= VNET_HDR_LEN, and the range was checked above.
            frame.push((addr.unchecked_add(take as u64), seg_len - take as u32));
        }
    }
    Ok(TxFrame {
        hdr: VnetHdr { bytes: hdr },
        segments: frame,
        len,
    })
}

/// Parses one RX chain.
pub fn parse_rx<M>(chain: DescriptorChain<M>) -> Result<RxBuffer, RxError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    let head = chain.head_index();
    let mut segments = Vec::new();
    let mut capacity: u32 = 0;
    let mut last_has_next = false;
    let mut any = false;
    for d in chain.clone() {
        any = true;
        last_has_next = d.has_next();
        if !d.is_write_only() {
            return Err(RxError::ReadOnly);
        }
        let take = if segments.len() < MAX_RX_SEGMENTS {
            d.len().min(MAX_RX_LEN - capacity)
        } else {
            0
        };
        if take == 0 {
            continue;
        }
        if !mem.check_range(d.addr(), take as usize, Permissions::Write) {
            return Err(RxError::BadAddress {
                addr: d.addr().raw_value(),
                len: d.len(),
            });
        }
        segments.push((d.addr(), take));
        capacity += take;
    }
    if !any {
        return Err(RxError::Empty);
    }
    if last_has_next {
        return Err(RxError::Unterminated);
    }
    if (capacity as usize) < VNET_HDR_LEN {
        return Err(RxError::TooSmall(capacity));
    }
    Ok(RxBuffer {
        head,
        segments,
        capacity,
    })
}

/// How many of `buffers` (in order) a frame of `len` bytes fills; `None`
/// if they do not hold it. Each buffer is filled completely before the
/// next (as virtio-net's mergeable receive buffers are).
pub fn buffers_needed(buffers: &[RxBuffer], len: usize) -> Option<usize> {
    let mut room = 0usize;
    for (i, b) in buffers.iter().enumerate() {
        room += b.capacity as usize;
        if room >= len {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::{desc, linked, mem, W};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestMemoryMmap};

    pub const A: u64 = 0x10_0000;
    pub const B: u64 = 0x20_0000;

    fn tx(m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<TxFrame, TxError> {
        let q = MockSplitQueue::new(m, 16);
        parse_tx(q.build_desc_chain(descs).unwrap())
    }

    fn rx(m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<RxBuffer, RxError> {
        let q = MockSplitQueue::new(m, 16);
        parse_rx(q.build_desc_chain(descs).unwrap())
    }

    #[test]
    fn tx_frame_parses() {
        let m = mem();
        m.write_slice(&[1, 4, 0, 0, 0x5a, 0x05], GuestAddress(A))
            .unwrap();
        let f = tx(&m, &[desc(A, 12, 0), desc(B, 1514, 0)]).unwrap();
        assert_eq!(f.len, 1526);
        assert_eq!(f.segments, vec![(GuestAddress(B), 1514)]);
        assert_eq!(f.hdr.flags(), HDR_F_NEEDS_CSUM);
        assert_eq!(f.hdr.gso_type(), GsoType::TcpV6);
        assert!(!f.hdr.gso_ecn());
        // Header and frame in one buffer (ANY_LAYOUT, as Linux sends).
        let f = tx(&m, &[desc(A, 60, 0)]).unwrap();
        assert_eq!(f.len, 60);
        assert_eq!(f.segments, vec![(GuestAddress(A + 12), 48)]);
        assert_eq!(f.hdr.bytes[..6], [1, 4, 0, 0, 0x5a, 0x05]);
        // A header split over descriptors.
        let f = tx(&m, &[desc(A, 5, 0), desc(A + 5, 9, 0), desc(B, 40, 0)]).unwrap();
        assert_eq!(f.hdr.bytes[..6], [1, 4, 0, 0, 0x5a, 0x05]);
        assert_eq!(
            f.segments,
            vec![(GuestAddress(A + 12), 2), (GuestAddress(B), 40)]
        );
    }

    #[test]
    fn tx_descriptor_loop_is_refused() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let next = VRING_DESC_F_NEXT as u16;
        let looped = [
            RawDescriptor::from(SplitDescriptor::new(A, 12, next, 1)),
            RawDescriptor::from(SplitDescriptor::new(B, 100, next, 0)),
        ];
        let chain = q.build_multiple_desc_chains(&looped).unwrap();
        assert_eq!(parse_tx(chain), Err(TxError::Unterminated));
        // A self-loop of zero-length descriptors.
        let q = MockSplitQueue::new(&m, 16);
        let selfloop = [RawDescriptor::from(SplitDescriptor::new(A, 0, next, 0))];
        let chain = q.build_multiple_desc_chains(&selfloop).unwrap();
        assert_eq!(parse_tx(chain), Err(TxError::Unterminated));
        // `next` past the end of the table.
        let q = MockSplitQueue::new(&m, 16);
        let past = [RawDescriptor::from(SplitDescriptor::new(A, 100, next, 99))];
        let chain = q.build_multiple_desc_chains(&past).unwrap();
        assert_eq!(parse_tx(chain), Err(TxError::Unterminated));
    }

    #[test]
    fn tx_out_of_range_address_is_refused() {
        let m = mem();
        assert!(matches!(
            tx(&m, &[desc(A, 12, 0), desc(0xff_ff00, 0x200, 0)]),
            Err(TxError::BadAddress { .. })
        ));
        assert!(matches!(
            tx(&m, &[desc(u64::MAX - 4, 100, 0)]),
            Err(TxError::BadAddress { .. })
        ));
        assert!(matches!(
            tx(&m, &[desc(0x1_0000_0000, 100, 0)]),
            Err(TxError::BadAddress { .. })
        ));
    }

    #[test]
    fn tx_write_only_descriptor_is_refused() {
        let m = mem();
        assert_eq!(
            tx(&m, &[desc(A, 12, 0), desc(B, 100, W)]),
            Err(TxError::WriteOnly)
        );
        assert_eq!(tx(&m, &[desc(A, 112, W)]), Err(TxError::WriteOnly));
    }

    #[test]
    fn tx_zero_and_huge_lengths() {
        let m = mem();
        assert_eq!(tx(&m, &[desc(A, 0, 0)]), Err(TxError::TooShort(0)));
        assert_eq!(
            tx(&m, &[desc(A, 12, 0), desc(B, 13, 0)]),
            Err(TxError::TooShort(25))
        );
        // Zero-length descriptors in between are skipped.
        let f = tx(&m, &[desc(A, 12, 0), desc(B, 0, 0), desc(B, 60, 0)]).unwrap();
        assert_eq!(f.segments, vec![(GuestAddress(B), 60)]);
        assert_eq!(tx(&m, &[desc(A, u32::MAX, 0)]), Err(TxError::TooLong));
        assert_eq!(
            tx(&m, &[desc(A, MAX_TX_LEN as u32 + 1, 0)]),
            Err(TxError::TooLong)
        );
        // Many descriptors whose sum passes the bound.
        let many: Vec<_> = (0..5).map(|i| desc(A + i * 0x1_0000, 0x4000, 0)).collect();
        assert_eq!(tx(&m, &many), Err(TxError::TooLong));
        let ok = tx(&m, &[desc(A, MAX_TX_LEN as u32, 0)]).unwrap();
        assert_eq!(ok.len as u64, MAX_TX_LEN);
    }

    #[test]
    fn rx_buffer_parses_and_is_capped() {
        let m = mem();
        let b = rx(&m, &[desc(A, 12, W), desc(B, 1514, W)]).unwrap();
        assert_eq!(b.capacity, 1526);
        let b = rx(&m, &[desc(A, 0x20_0000, W)]).unwrap();
        assert_eq!(b.capacity, MAX_RX_LEN);
        // Buffers past the MAX_RX_SEGMENTS-th are not counted, but still
        // checked for direction.
        let long = |descs: &[(u64, u32, u16)]| {
            let q = MockSplitQueue::new(&m, 128);
            parse_rx(q.build_desc_chain(&linked(descs)).unwrap())
        };
        let many: Vec<_> = (0..80).map(|i| (A + i * 0x100, 0x100, W)).collect();
        let b = long(&many).unwrap();
        assert_eq!(b.segments.len(), MAX_RX_SEGMENTS);
        assert_eq!(b.capacity as usize, MAX_RX_SEGMENTS * 0x100);
        let mut bad = many.clone();
        bad[70].2 = 0;
        assert_eq!(long(&bad), Err(RxError::ReadOnly));
    }

    #[test]
    fn rx_chain_too_small_for_the_header() {
        let m = mem();
        assert_eq!(rx(&m, &[desc(A, 11, W)]), Err(RxError::TooSmall(11)));
        assert_eq!(
            rx(&m, &[desc(A, 4, W), desc(B, 4, W)]),
            Err(RxError::TooSmall(8))
        );
        assert_eq!(rx(&m, &[desc(A, 0, W)]), Err(RxError::TooSmall(0)));
    }

    #[test]
    fn rx_read_only_or_outside_memory_is_refused() {
        let m = mem();
        assert_eq!(
            rx(&m, &[desc(A, 12, W), desc(B, 100, 0)]),
            Err(RxError::ReadOnly)
        );
        assert!(matches!(
            rx(&m, &[desc(0xff_fff0, 0x100, W)]),
            Err(RxError::BadAddress { .. })
        ));
        let q = MockSplitQueue::new(&m, 16);
        let w = (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16;
        let looped = [
            RawDescriptor::from(SplitDescriptor::new(A, 100, w, 1)),
            RawDescriptor::from(SplitDescriptor::new(B, 100, w, 0)),
        ];
        let chain = q.build_multiple_desc_chains(&looped).unwrap();
        assert_eq!(parse_rx(chain), Err(RxError::Unterminated));
    }

    #[test]
    fn buffers_needed_counts_in_order() {
        let m = mem();
        let b = |len| rx(&m, &linked(&[(A, len, W)])).unwrap();
        let bufs = [b(1500), b(1500), b(1500)];
        assert_eq!(buffers_needed(&bufs, 12), Some(1));
        assert_eq!(buffers_needed(&bufs, 1500), Some(1));
        assert_eq!(buffers_needed(&bufs, 1501), Some(2));
        assert_eq!(buffers_needed(&bufs, 4500), Some(3));
        assert_eq!(buffers_needed(&bufs, 4501), None);
        assert_eq!(buffers_needed(&[], 1), None);
    }
}
