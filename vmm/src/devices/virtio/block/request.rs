//! Turns a descriptor chain into a typed block request, checking everything
//! the guest controls (directions, lengths, addresses, sector ranges,
//! overflow) without doing any I/O. The last descriptor must be a
//! device-writable status byte; when it is, even a malformed request gets an
//! I/O-error status back.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemory};

use super::{SECTOR_SIZE, SEG_MAX};

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

/// Status byte: success.
pub const S_OK: u8 = 0;
/// Status byte: I/O error (also for malformed requests).
pub const S_IOERR: u8 = 1;
/// Status byte: unsupported request type.
pub const S_UNSUPP: u8 = 2;

/// The request header as the guest lays it out.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    kind: u32,
    _reserved: u32,
    sector: u64,
}

// SAFETY: plain old data, every bit pattern is valid, no padding.
unsafe impl ByteValued for RequestHeader {}

/// What the guest asked for. Every value it may write has a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    /// Read sectors into guest buffers.
    In,
    /// Write guest buffers to sectors.
    Out,
    /// Make earlier writes durable.
    Flush,
    /// Return the drive id.
    GetId,
    /// Anything else.
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(v: u32) -> Self {
        match v {
            T_IN => RequestType::In,
            T_OUT => RequestType::Out,
            T_FLUSH => RequestType::Flush,
            T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }
}

/// Why a chain is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The chain is empty or its last descriptor is not a writable status byte.
    #[error("no device-writable status descriptor at the end of the chain")]
    NoStatus,
    /// The header descriptor is missing, too short or device-writable.
    #[error("bad request header")]
    BadHeader,
    /// More data segments than advertised.
    #[error("{0} data segments, more than {SEG_MAX}")]
    TooManySegments(usize),
    /// A data descriptor points in the wrong direction for the request type.
    #[error("data descriptor with the wrong direction for {0:?}")]
    WrongDirection(RequestType),
    /// A descriptor's buffer is not inside guest memory.
    #[error("descriptor buffer {addr:#x}+{len} is outside guest memory")]
    BadAddress {
        /// Address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// Data length is not a whole number of sectors.
    #[error("data length {0} is not a multiple of {SECTOR_SIZE}")]
    Misaligned(u64),
    /// The request reaches past the end of the disk.
    #[error("sector {sector} + {len} bytes is past the end of the disk ({capacity} sectors)")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Bytes.
        len: u64,
        /// Disk size in sectors.
        capacity: u64,
    },
    /// GET_ID without a writable buffer.
    #[error("GET_ID needs a device-writable buffer")]
    NoIdBuffer,
}

/// A request that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: RequestType,
    /// First sector (In/Out).
    pub sector: u64,
    /// Data buffers, in order.
    pub data: Vec<(GuestAddress, u32)>,
    /// Total data bytes.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// The outcome of parsing: a request, or an error with the status address
/// when one was found (so the guest can be told), and the chain's head.
pub type ParseResult = Result<Request, (RequestError, Option<GuestAddress>)>;

/// Parses one chain. `capacity` is the disk size in sectors.
pub fn parse<M>(chain: DescriptorChain<M>, capacity: u64) -> ParseResult
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem = chain.memory();
    // At most header + SEG_MAX data + status descriptors are looked at; a
    // longer chain is refused (the iterator itself is bounded by the queue
    // size, so loops end).
    let limit = SEG_MAX as usize + 2;
    let descs: Vec<_> = chain.clone().take(limit + 1).collect();
    let in_range = |addr: GuestAddress, len: u32| {
        len == 0 || mem.check_range(addr, len as usize, vm_memory::Permissions::ReadWrite)
    };

    let status = match descs.last() {
        Some(d) if d.is_write_only() && d.len() >= 1 && in_range(d.addr(), 1) => d.addr(),
        _ => return Err((RequestError::NoStatus, None)),
    };
    let fail = |e: RequestError| Err((e, Some(status)));
    if descs.len() > limit {
        return fail(RequestError::TooManySegments(descs.len() - 2));
    }
    if descs.len() < 2 {
        return fail(RequestError::BadHeader);
    }
    let head = &descs[0];
    if head.is_write_only() || (head.len() as usize) < std::mem::size_of::<RequestHeader>() {
        return fail(RequestError::BadHeader);
    }
    let header: RequestHeader = match mem.read_obj(head.addr()) {
        Ok(h) => h,
        Err(_) => {
            return fail(RequestError::BadAddress {
                addr: head.addr().raw_value(),
                len: head.len(),
            })
        }
    };
    let kind = RequestType::from(u32::from_le(header.kind));
    let sector = u64::from_le(header.sector);

    let data_descs = &descs[1..descs.len() - 1];
    let mut data = Vec::with_capacity(data_descs.len());
    let mut data_len: u64 = 0;
    for d in data_descs {
        let wants_writable = match kind {
            RequestType::In | RequestType::GetId => Some(true),
            RequestType::Out => Some(false),
            RequestType::Flush | RequestType::Unsupported(_) => None,
        };
        if let Some(w) = wants_writable {
            if d.is_write_only() != w {
                return fail(RequestError::WrongDirection(kind));
            }
        }
        if !in_range(d.addr(), d.len()) {
            return fail(RequestError::BadAddress {
                addr: d.addr().raw_value(),
                len: d.len(),
            });
        }
        data_len += u64::from(d.len());
        data.push((d.addr(), d.len()));
    }

    match kind {
        RequestType::In | RequestType::Out => {
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return fail(RequestError::Misaligned(data_len));
            }
            let end = sector.checked_add(data_len / SECTOR_SIZE);
            if end.is_none_or(|e| e > capacity) {
                return fail(RequestError::OutOfRange {
                    sector,
                    len: data_len,
                    capacity,
                });
            }
        }
        RequestType::GetId if data.is_empty() => return fail(RequestError::NoIdBuffer),
        _ => {}
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    pub const W: u16 = VRING_DESC_F_WRITE as u16;
    pub const HDR: u64 = 0x10_0000;
    pub const DATA: u64 = 0x20_0000;
    pub const STATUS: u64 = 0x30_0000;

    pub fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    pub fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    /// Descriptors linked in order (NEXT set and pointing at the following one).
    pub fn linked(descs: &[(u64, u32, u16)]) -> Vec<RawDescriptor> {
        let n = descs.len();
        descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let (flags, next) = if i + 1 < n {
                    (flags | VRING_DESC_F_NEXT as u16, i as u16 + 1)
                } else {
                    (flags, 0)
                };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect()
    }

    pub fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        mem.write_obj(
            RequestHeader {
                kind,
                _reserved: 0,
                sector,
            },
            GuestAddress(HDR),
        )
        .unwrap();
    }

    fn parse_chain(mem: &GuestMemoryMmap, descs: &[RawDescriptor], capacity: u64) -> ParseResult {
        let q = MockSplitQueue::new(mem, 16);
        let chain = q.build_desc_chain(descs).unwrap();
        parse(chain, capacity)
    }

    #[test]
    fn read_request_parses() {
        let m = mem();
        header(&m, T_IN, 8);
        let r = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 4096, W), desc(STATUS, 1, W)],
            100,
        )
        .unwrap();
        assert_eq!(r.kind, RequestType::In);
        assert_eq!(
            (r.sector, r.data_len, r.status),
            (8, 4096, GuestAddress(STATUS))
        );
    }

    #[test]
    fn write_with_writable_data_is_refused() {
        let m = mem();
        header(&m, T_OUT, 0);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 512, W), desc(STATUS, 1, W)],
            100,
        )
        .unwrap_err();
        assert_eq!(
            e,
            (
                RequestError::WrongDirection(RequestType::Out),
                Some(GuestAddress(STATUS))
            )
        );
    }

    #[test]
    fn read_into_read_only_buffer_is_refused() {
        let m = mem();
        header(&m, T_IN, 0);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 512, 0), desc(STATUS, 1, W)],
            100,
        )
        .unwrap_err();
        assert_eq!(e.0, RequestError::WrongDirection(RequestType::In));
    }

    #[test]
    fn request_past_the_end_of_the_disk_is_refused() {
        let m = mem();
        header(&m, T_IN, 99);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 1024, W), desc(STATUS, 1, W)],
            100,
        )
        .unwrap_err();
        assert!(matches!(e.0, RequestError::OutOfRange { sector: 99, .. }));
        header(&m, T_IN, u64::MAX);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 512, W), desc(STATUS, 1, W)],
            100,
        )
        .unwrap_err();
        assert!(
            matches!(e.0, RequestError::OutOfRange { .. }),
            "sector overflow"
        );
    }

    #[test]
    fn out_of_memory_buffers_are_refused() {
        let m = mem();
        header(&m, T_IN, 0);
        let e = parse_chain(
            &m,
            &[
                desc(HDR, 16, 0),
                desc(0xff_f000, 0x2000, W),
                desc(STATUS, 1, W),
            ],
            100,
        )
        .unwrap_err();
        assert!(matches!(e.0, RequestError::BadAddress { .. }));
        let e = parse_chain(
            &m,
            &[
                desc(HDR, 16, 0),
                desc(DATA, 512, W),
                desc(0x1_0000_0000, 1, W),
            ],
            100,
        )
        .unwrap_err();
        assert_eq!(e, (RequestError::NoStatus, None));
        let e = parse_chain(
            &m,
            &[
                desc(0xfff_ffff_0000, 16, 0),
                desc(DATA, 512, W),
                desc(STATUS, 1, W),
            ],
            100,
        )
        .unwrap_err();
        assert!(matches!(e.0, RequestError::BadAddress { .. }));
    }

    #[test]
    fn zero_and_huge_lengths() {
        let m = mem();
        header(&m, T_IN, 0);
        // A length that overflows the chain's byte count ends the chain
        // early (no status), or is out of memory: refused either way.
        let e = parse_chain(
            &m,
            &[
                desc(HDR, 16, 0),
                desc(DATA, u32::MAX, W),
                desc(STATUS, 1, W),
            ],
            u64::MAX,
        )
        .unwrap_err();
        assert!(
            matches!(
                e.0,
                RequestError::BadAddress { .. } | RequestError::NoStatus
            ),
            "{e:?}"
        );
        let e = parse_chain(&m, &[desc(HDR, 0, 0), desc(STATUS, 1, W)], 100).unwrap_err();
        assert_eq!(e.0, RequestError::BadHeader);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 0, W), desc(STATUS, 0, W)],
            100,
        )
        .unwrap_err();
        assert_eq!(e.0, RequestError::NoStatus);
        // A zero-length data buffer is a read of nothing: allowed.
        let r = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 0, W), desc(STATUS, 1, W)],
            100,
        )
        .unwrap();
        assert_eq!(r.data_len, 0);
    }

    #[test]
    fn misaligned_length_is_refused() {
        let m = mem();
        header(&m, T_OUT, 0);
        let e = parse_chain(
            &m,
            &[desc(HDR, 16, 0), desc(DATA, 100, 0), desc(STATUS, 1, W)],
            100,
        )
        .unwrap_err();
        assert_eq!(e.0, RequestError::Misaligned(100));
    }

    #[test]
    fn unknown_type_parses_as_unsupported() {
        let m = mem();
        header(&m, 77, 0);
        let r = parse_chain(&m, &[desc(HDR, 16, 0), desc(STATUS, 1, W)], 100).unwrap();
        assert_eq!(r.kind, RequestType::Unsupported(77));
    }

    #[test]
    fn status_that_is_read_only_means_no_status() {
        let m = mem();
        header(&m, T_FLUSH, 0);
        let e = parse_chain(&m, &[desc(HDR, 16, 0), desc(STATUS, 1, 0)], 100).unwrap_err();
        assert_eq!(e, (RequestError::NoStatus, None));
    }

    #[test]
    fn too_many_segments_are_refused() {
        let m = mem();
        header(&m, T_IN, 0);
        let q = MockSplitQueue::new(&m, 512);
        let mut descs = vec![desc(HDR, 16, 0)];
        descs.extend((0..SEG_MAX as u64 + 1).map(|i| desc(DATA + i * 512, 512, W)));
        descs.push(desc(STATUS, 1, W));
        let chain = q.build_desc_chain(&descs).unwrap();
        let e = parse(chain, 1 << 20).unwrap_err();
        assert!(
            matches!(
                e.0,
                RequestError::TooManySegments(_) | RequestError::NoStatus
            ),
            "{e:?}"
        );
    }

    #[test]
    fn descriptor_loop_terminates() {
        let m = mem();
        header(&m, T_IN, 0);
        let q = MockSplitQueue::new(&m, 16);
        // Three descriptors whose last one points back to the first.
        let looped = [
            RawDescriptor::from(SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(SplitDescriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                2,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                STATUS,
                1,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                0,
            )),
        ];
        let chain = q.build_multiple_desc_chains(&looped).unwrap();
        // Terminates (bounded by the queue size) and is refused or parsed,
        // never hangs.
        let _ = parse(chain, 100);
    }
}
