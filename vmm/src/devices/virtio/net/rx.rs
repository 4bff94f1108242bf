//! The receive buffers the device holds: chains taken from the RX queue,
//! parsed (`request.rs`) and kept in ring order until frames fill them.
//!
//! Holding them is what lets a frame go from the TAP straight into guest
//! memory. The size of the next frame is unknown until it is read, so the
//! device takes room for the largest one (with mergeable buffers, several
//! chains) before it reads; only the buffers the frame reached go to the
//! used ring, and the others stay held for the next frame. Handing those
//! back to the available ring instead would mean parsing them again for
//! every frame, and could not be undone past a malformed chain already
//! returned in between. Malformed chains go to the used ring (length 0) as
//! they are met, which is always between two frames, so the buffers of one
//! frame are consecutive there.
//!
//! No I/O here: the TAP read is a callback, so the bookkeeping is
//! unit-tested with crafted chains and frames.

use std::collections::VecDeque;
use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::request::{parse_rx, RxBuffer};
use super::VNET_HDR_LEN;

/// Segments offered to one TAP read: a segment is two iovecs where it
/// crosses a memory region boundary, and a `readv` takes at most 1024.
pub const MAX_READ_SEGMENTS: usize = 512;
/// Offset of `num_buffers` in the virtio-net header.
pub const NUM_BUFFERS_OFFSET: usize = 10;

/// What one read into the held buffers came to.
#[derive(Debug)]
pub enum Received {
    /// A frame of `len` bytes (header included) filled `buffers` held
    /// buffers, which are now on the used ring.
    Frame {
        /// Bytes, header included.
        len: usize,
        /// Buffers used (the header's `num_buffers`).
        buffers: usize,
    },
    /// The frame (of this many bytes) was longer than the room offered;
    /// the TAP dropped it. Nothing was used.
    Truncated(usize),
    /// Shorter than a virtio-net header; nothing was used.
    Runt(usize),
    /// The read failed (`WouldBlock`: nothing to read).
    Error(io::Error),
}

/// What taking chains from the queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Good chains added to the held buffers.
    pub held: usize,
    /// Malformed chains put on the used ring with length 0.
    pub malformed: usize,
}

/// Parsed receive chains taken from the available ring and not yet used,
/// in ring order.
#[derive(Debug, Default)]
pub struct RxBuffers {
    bufs: VecDeque<RxBuffer>,
    /// Sum of the held buffers' capacities.
    capacity: usize,
}

impl RxBuffers {
    /// No buffers.
    pub fn new() -> Self {
        RxBuffers::default()
    }

    /// Buffers held.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether no buffer is held.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Bytes the held buffers hold together.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the first held buffer holds (0 if none).
    pub fn first_capacity(&self) -> usize {
        self.bufs.front().map_or(0, |b| b.capacity as usize)
    }

    /// Forgets every held buffer (the device was reset).
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.capacity = 0;
    }

    /// Takes chains from `q` until the held buffers have `want` bytes of
    /// room, `max` buffers are held, or `q` has no more. At most one
    /// queue's worth of chains per call, so a guest that keeps posting
    /// malformed chains cannot keep the device here.
    pub fn take(&mut self, q: &mut Queue, mem: &GuestMemoryMmap, want: usize, max: usize) -> Taken {
        let mut taken = Taken::default();
        let mut popped = 0usize;
        while self.capacity < want && self.bufs.len() < max && popped < usize::from(q.size()) {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            popped += 1;
            let head = chain.head_index();
            match parse_rx(chain) {
                Ok(b) => {
                    self.capacity += b.capacity as usize;
                    self.bufs.push_back(b);
                    taken.held += 1;
                }
                Err(_) => {
                    // A head outside the table cannot go on the used ring
                    // at all; then only the guest loses that entry.
                    let _ = q.add_used(mem, head, 0);
                    taken.malformed += 1;
                }
            }
        }
        taken
    }

    /// The room the next read may fill: the held buffers in order (only the
    /// first without mergeable buffers), whole buffers only, at most
    /// `MAX_READ_SEGMENTS` segments; and its size in bytes.
    fn room(&self, mergeable: bool) -> (Vec<(GuestAddress, u32)>, usize) {
        let mut segments = Vec::new();
        let mut bytes = 0usize;
        for b in &self.bufs {
            if segments.len() + b.segments.len() > MAX_READ_SEGMENTS {
                break;
            }
            segments.extend_from_slice(&b.segments);
            bytes += b.capacity as usize;
            if !mergeable {
                break;
            }
        }
        (segments, bytes)
    }

    /// Reads one frame into the held buffers: `read` gets the segments to
    /// fill, in order, and returns the frame's full length (more than the
    /// segments hold when it did not fit). A frame that fit goes to the
    /// used ring: every buffer it reached, in order, with the bytes it got,
    /// and `num_buffers` in its header set to their count.
    pub fn receive<F>(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        mergeable: bool,
        read: F,
    ) -> Received
    where
        F: FnOnce(&[(GuestAddress, u32)]) -> io::Result<usize>,
    {
        let (segments, room) = self.room(mergeable);
        match read(&segments) {
            Err(e) => Received::Error(e),
            Ok(n) if n < VNET_HDR_LEN => Received::Runt(n),
            Ok(n) if n > room => Received::Truncated(n),
            Ok(n) => Received::Frame {
                len: n,
                buffers: self.complete(q, mem, n),
            },
        }
    }

    /// Copies a frame read earlier (header first) into the held buffers
    /// and puts them on the used ring as `receive` does. Returns `None`,
    /// doing nothing, if the buffers lack room for it (without mergeable
    /// buffers: if the first one does).
    pub fn write_frame(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        mergeable: bool,
        frame: &[u8],
    ) -> Option<usize> {
        let room = if mergeable {
            self.capacity
        } else {
            self.first_capacity()
        };
        if self.bufs.is_empty() || frame.len() < VNET_HDR_LEN || frame.len() > room {
            return None;
        }
        let segments = self.bufs.iter().flat_map(|b| b.segments.iter());
        write_at(mem, segments, 0, frame);
        Some(self.complete(q, mem, frame.len()))
    }

    /// Puts the buffers that a frame of `len` bytes (at most the held
    /// capacity, at least a header) filled on the used ring, after setting
    /// `num_buffers` in the frame's header.
    fn complete(&mut self, q: &mut Queue, mem: &GuestMemoryMmap, len: usize) -> usize {
        let mut count = 0usize;
        let mut left = len;
        for b in &self.bufs {
            count += 1;
            if b.capacity as usize >= left {
                break;
            }
            left -= b.capacity as usize;
        }
        // count <= held buffers <= queue size, which fits in u16.
        let num = u16::try_from(count).unwrap_or(u16::MAX);
        if let Some(first) = self.bufs.front() {
            write_at(
                mem,
                first.segments.iter(),
                NUM_BUFFERS_OFFSET,
                &num.to_le_bytes(),
            );
        }
        let mut left = len;
        for _ in 0..count {
            let Some(b) = self.bufs.pop_front() else {
                break;
            };
            self.capacity -= b.capacity as usize;
            let used = left.min(b.capacity as usize);
            left -= used;
            // used <= capacity <= MAX_RX_LEN, which fits in u32. A head
            // that parsed is inside the table, so this cannot fail.
            let _ = q.add_used(mem, b.head, used as u32);
        }
        count
    }
}

/// Writes `data` at byte `offset` of the buffer made of `segments` (which
/// the parser checked are inside guest memory); what does not fit is cut.
fn write_at<'a, I>(mem: &GuestMemoryMmap, segments: I, mut offset: usize, mut data: &[u8])
where
    I: Iterator<Item = &'a (GuestAddress, u32)>,
{
    for &(addr, len) in segments {
        if data.is_empty() {
            break;
        }
        let len = len as usize;
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(data.len());
        if let Some(at) = addr.checked_add(offset as u64) {
            let _ = mem.write_slice(&data[..n], at);
        }
        data = &data[n..];
        offset = 0;
    }
}
