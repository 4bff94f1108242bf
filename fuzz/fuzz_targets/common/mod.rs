//! Shared by the descriptor-chain targets: fuzz bytes become guest memory
//! and a descriptor table.

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory size; descriptor addresses range over twice this, so half
/// of them point outside memory.
pub const MEM: usize = 0x40_0000;

/// Fresh guest memory, or None if it cannot be mapped.
pub fn memory() -> Option<GuestMemoryMmap> {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).ok()
}

/// Up to 16 descriptors of 16 input bytes each (address, length, flags,
/// next), then up to 4 KiB written to guest memory at 1 MiB. None when
/// the input holds no descriptor.
pub fn descriptors(mem: &GuestMemoryMmap, data: &[u8]) -> Option<Vec<RawDescriptor>> {
    let n = (data.len() / 16).min(16);
    let mut descs = Vec::with_capacity(n);
    for d in data.chunks_exact(16).take(n) {
        let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8])) % (MEM as u64 * 2);
        let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or([0; 4]));
        let flags = u16::from_le_bytes([d[12], d[13]]);
        let next = u16::from_le_bytes([d[14], d[15]]);
        descs.push(RawDescriptor::from(Descriptor::new(addr, len, flags, next)));
    }
    let rest = &data[n * 16..];
    let _ = mem.write_slice(&rest[..rest.len().min(0x1000)], GuestAddress(0x10_0000));
    (!descs.is_empty()).then_some(descs)
}
