//! Fuzzes the check that decides whether a queue's rings may be handed to
//! vhost-net as host addresses: guest memory of two adjacent regions and a
//! hole, then a queue size and three ring addresses from the input. An
//! accepted queue must have every part of every ring inside one region
//! (checked here independently, byte range by byte range).
#![no_main]

use cocoon_vmm::devices::virtio::net::vhost::{check_rings, ring_sizes};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x20000, 0x4000)];

/// Whether `[addr, addr + len)` is inside one of `REGIONS`.
fn inside_one(addr: u64, len: u64) -> bool {
    REGIONS.iter().any(|&(start, size)| {
        addr >= start && addr.checked_add(len).is_some_and(|end| end <= start + size as u64)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 26 {
        return;
    }
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(
        &REGIONS.map(|(a, s)| (GuestAddress(a), s)),
    ) else {
        return;
    };
    let size = u16::from_le_bytes([data[0], data[1]]);
    let addr = |i: usize| u64::from_le_bytes(data[2 + 8 * i..10 + 8 * i].try_into().unwrap());
    let Ok(mut q) = Queue::new(1024) else {
        return;
    };
    q.set_size(size);
    let [desc, avail, used] = [addr(0), addr(1), addr(2)];
    q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
    q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
    q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
    if check_rings(&mem, 0, &q).is_ok() {
        let addrs = [q.desc_table(), q.avail_ring(), q.used_ring()];
        for ((what, len), a) in ring_sizes(q.size()).into_iter().zip(addrs) {
            assert!(inside_one(a, len), "{what} at {a:#x}+{len:#x} accepted");
        }
    }
});
