//! The virtio-vsock packet header and the parsing of guest packets. Pure:
//! bytes or a descriptor chain in, typed values out; no I/O.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestMemory};

/// Header size on the wire.
pub const HDR_SIZE: usize = 44;
/// Socket type: stream (the only one supported).
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operation. Every value the guest may write has a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Connection request.
    Request,
    /// Connection accepted.
    Response,
    /// Connection refused or reset.
    Rst,
    /// Half or full close.
    Shutdown,
    /// Data.
    Rw,
    /// Here is my credit.
    CreditUpdate,
    /// Tell me your credit.
    CreditRequest,
    /// Anything else.
    Unknown(u16),
}

impl From<u16> for Op {
    fn from(v: u16) -> Self {
        match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            other => Op::Unknown(other),
        }
    }
}

impl Op {
    fn code(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
            Op::Unknown(v) => v,
        }
    }
}

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub kind: u16,
    /// Operation.
    pub op: Op,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed.
    pub fwd_cnt: u32,
}

fn u64_at(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u16_at(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    /// Decodes the wire format.
    pub fn parse(b: &[u8; HDR_SIZE]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            kind: u16_at(b, 28),
            op: Op::from(u16_at(b, 30)),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.code().to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a guest packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer readable bytes than a header.
    #[error("packet shorter than its header")]
    Short,
    /// Payload longer than allowed or than the buffers carrying it.
    #[error("payload length {0} is too long")]
    TooLong(u32),
    /// Not from the guest's own CID.
    #[error("source CID {0} is not the guest's")]
    Spoofed(u64),
}

/// Checks a header read from the guest's TX queue, given how many bytes
/// follow it in the chain.
pub fn check_tx(
    h: &Header,
    readable_after_header: usize,
    guest_cid: u64,
) -> Result<(), PacketError> {
    if h.src_cid != guest_cid {
        return Err(PacketError::Spoofed(h.src_cid));
    }
    if h.len > super::MAX_PAYLOAD || h.len as usize > readable_after_header {
        return Err(PacketError::TooLong(h.len));
    }
    Ok(())
}

/// Why a TX chain was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The chain's descriptors are unusable (outside memory, a loop, or a
    /// device-writable buffer in the guest's TX chain).
    #[error("bad descriptor chain")]
    BadChain,
    /// The header or payload is invalid.
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// Reads one guest packet (header, and the payload of a data packet) from
/// a TX chain. The payload is copied out, so the guest cannot change it
/// after it was checked.
pub fn read_tx<M>(chain: DescriptorChain<M>, guest_cid: u64) -> Result<(Header, Vec<u8>), TxError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    // The iterator is bounded by the queue size, so a loop ends; a TX
    // chain is all device-readable, and a writable descriptor in it is a
    // guest bug or an attack, not something to skip over.
    let descs: Vec<_> = chain.clone().collect();
    let mut total = 0usize;
    for d in &descs {
        if d.is_write_only() {
            return Err(TxError::BadChain);
        }
        let len = d.len() as usize;
        if len > 0 && !mem.check_range(d.addr(), len, vm_memory::Permissions::Read) {
            return Err(TxError::BadChain);
        }
        total = total.saturating_add(len);
    }
    if total < HDR_SIZE {
        return Err(PacketError::Short.into());
    }
    // Gathers `out.len()` bytes starting `skip` bytes into the chain.
    let gather = |mut skip: usize, out: &mut [u8]| -> Result<(), TxError> {
        let mut done = 0;
        for d in &descs {
            if done == out.len() {
                break;
            }
            let len = d.len() as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = (len - skip).min(out.len() - done);
            let addr = d.addr().checked_add(skip as u64).ok_or(TxError::BadChain)?;
            mem.read_slice(&mut out[done..done + n], addr)
                .map_err(|_| TxError::BadChain)?;
            done += n;
            skip = 0;
        }
        if done == out.len() {
            Ok(())
        } else {
            Err(TxError::BadChain)
        }
    };
    let mut hdr = [0u8; HDR_SIZE];
    gather(0, &mut hdr)?;
    let h = Header::parse(&hdr);
    check_tx(&h, total - HDR_SIZE, guest_cid)?;
    let mut payload = vec![0u8; if h.op == Op::Rw { h.len as usize } else { 0 }];
    gather(HDR_SIZE, &mut payload)?;
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::{desc, linked, mem, W};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const HDR_AT: u64 = 0x10_0000;
    const DATA_AT: u64 = 0x20_0000;

    fn data_header(len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1000,
            dst_port: 1024,
            len,
            kind: TYPE_STREAM,
            op: Op::Rw,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    fn tx(m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<(Header, Vec<u8>), TxError> {
        let q = MockSplitQueue::new(m, 16);
        let chain = q.build_desc_chain(descs).unwrap();
        read_tx(chain, 3)
    }

    fn setup(len: u32) -> GuestMemoryMmap {
        let m = mem();
        m.write_slice(&data_header(len).to_bytes(), GuestAddress(HDR_AT))
            .unwrap();
        m.write_slice(&vec![0xab; 8192], GuestAddress(DATA_AT))
            .unwrap();
        m
    }

    #[test]
    fn a_data_packet_across_descriptors_is_read_whole() {
        let m = setup(100);
        let (h, p) = tx(
            &m,
            &linked(&[
                (HDR_AT, HDR_SIZE as u32, 0),
                (DATA_AT, 60, 0),
                (DATA_AT + 60, 40, 0),
            ]),
        )
        .unwrap();
        assert_eq!(h.len, 100);
        assert_eq!(p, vec![0xab; 100]);
        // The header split over two descriptors works too.
        let (h, _) = tx(
            &m,
            &linked(&[
                (HDR_AT, 10, 0),
                (HDR_AT + 10, HDR_SIZE as u32 - 10, 0),
                (DATA_AT, 100, 0),
            ]),
        )
        .unwrap();
        assert_eq!(h.op, Op::Rw);
    }

    #[test]
    fn crafted_tx_chains_are_refused() {
        let m = setup(100);
        let hdr = (HDR_AT, HDR_SIZE as u32, 0);
        // A device-writable buffer in a TX chain.
        assert_eq!(
            tx(&m, &linked(&[hdr, (DATA_AT, 100, W)])),
            Err(TxError::BadChain)
        );
        // A buffer outside guest memory.
        assert_eq!(
            tx(&m, &linked(&[hdr, (0xffff_ff00_0000, 100, 0)])),
            Err(TxError::BadChain)
        );
        // A buffer that runs past the end of memory.
        assert_eq!(
            tx(&m, &linked(&[hdr, (0xff_ff00, 0x1000, 0)])),
            Err(TxError::BadChain)
        );
        // Less than a header.
        assert_eq!(
            tx(&m, &[desc(HDR_AT, 20, 0)]),
            Err(TxError::Packet(PacketError::Short))
        );
        // Zero-length descriptors only.
        assert_eq!(
            tx(&m, &linked(&[(HDR_AT, 0, 0), (DATA_AT, 0, 0)])),
            Err(TxError::Packet(PacketError::Short))
        );
        // A payload longer than the buffers carrying it.
        assert_eq!(
            tx(&m, &linked(&[hdr, (DATA_AT, 99, 0)])),
            Err(TxError::Packet(PacketError::TooLong(100)))
        );
        // A huge length field.
        m.write_slice(&data_header(u32::MAX).to_bytes(), GuestAddress(HDR_AT))
            .unwrap();
        assert_eq!(
            tx(&m, &linked(&[hdr, (DATA_AT, 8192, 0)])),
            Err(TxError::Packet(PacketError::TooLong(u32::MAX)))
        );
        // A spoofed source CID.
        let mut spoof = data_header(0);
        spoof.src_cid = 2;
        m.write_slice(&spoof.to_bytes(), GuestAddress(HDR_AT))
            .unwrap();
        assert_eq!(
            tx(&m, &[desc(HDR_AT, HDR_SIZE as u32, 0)]),
            Err(TxError::Packet(PacketError::Spoofed(2)))
        );
    }

    #[test]
    fn a_descriptor_loop_ends() {
        let m = setup(0);
        // Two descriptors pointing at each other: the chain iterator stops
        // after the queue size, and the packet is still a well-formed
        // zero-length one or refused, never an endless loop.
        let descs = [
            RawDescriptor::from(virtio_queue::desc::split::Descriptor::new(
                HDR_AT,
                HDR_SIZE as u32,
                1,
                1,
            )),
            RawDescriptor::from(virtio_queue::desc::split::Descriptor::new(
                DATA_AT, 16, 1, 0,
            )),
        ];
        let q = MockSplitQueue::new(&m, 16);
        let chain = q.build_multiple_desc_chains(&descs).unwrap();
        let _ = read_tx(chain, 3);
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 80,
            len: 10,
            kind: TYPE_STREAM,
            op: Op::Rw,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
    }

    #[test]
    fn every_op_code_has_a_home() {
        for v in 0..=u16::MAX {
            let op = Op::from(v);
            assert_eq!(op.code(), v);
        }
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut h = Header::parse(&[0u8; HDR_SIZE]);
        h.src_cid = 3;
        h.len = 100;
        assert_eq!(check_tx(&h, 99, 3), Err(PacketError::TooLong(100)));
        assert_eq!(check_tx(&h, 100, 3), Ok(()));
        h.len = u32::MAX;
        assert_eq!(
            check_tx(&h, usize::MAX, 3),
            Err(PacketError::TooLong(u32::MAX))
        );
        h.len = 0;
        h.src_cid = 2;
        assert_eq!(check_tx(&h, 0, 3), Err(PacketError::Spoofed(2)));
    }
}
