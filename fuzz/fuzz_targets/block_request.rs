//! Fuzzes virtio-blk request parsing: the input becomes a descriptor table
//! (address, length, flags, next for each entry) plus guest memory contents,
//! and the first available chain is parsed. Parsing must never panic, and a
//! request it accepts must lie inside guest memory and the disk.
#![no_main]

use cocoon_vmm::devices::virtio::block::request::{parse, RequestType};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

const MEM: usize = 0x40_0000;
const CAPACITY: u64 = 2048;

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    let q = MockSplitQueue::new(&mem, 16);
    // Up to 16 descriptors of 16 bytes each, then memory contents.
    let n = (data.len() / 16).min(16);
    let mut descs = Vec::with_capacity(n);
    for i in 0..n {
        let d = &data[i * 16..i * 16 + 16];
        let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8])) % (MEM as u64 * 2);
        let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or([0; 4]));
        let flags = u16::from_le_bytes([d[12], d[13]]);
        let next = u16::from_le_bytes([d[14], d[15]]);
        descs.push(RawDescriptor::from(Descriptor::new(addr, len, flags, next)));
    }
    if descs.is_empty() {
        return;
    }
    let rest = &data[n * 16..];
    let _ = mem.write_slice(&rest[..rest.len().min(0x1000)], GuestAddress(0x10_0000));
    let Ok(chain) = q.build_multiple_desc_chains(&descs) else {
        return;
    };
    if let Ok(req) = parse(chain, CAPACITY) {
        for &(addr, len) in &req.data {
            assert!(
                len == 0 || mem.check_range(addr, len as usize, vm_memory::Permissions::ReadWrite)
            );
        }
        if matches!(req.kind, RequestType::In | RequestType::Out) {
            assert!(req.sector + req.data_len / 512 <= CAPACITY);
        }
    }
});
