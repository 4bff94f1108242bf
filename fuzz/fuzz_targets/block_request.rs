//! Fuzzes virtio-blk request parsing: the input becomes a descriptor table
//! (address, length, flags, next for each entry) plus guest memory contents,
//! and the first available chain is parsed. Parsing must never panic, and a
//! request it accepts must lie inside guest memory and the disk.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use cocoon_vmm::devices::virtio::block::request::{parse, RequestType};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestMemory;

const CAPACITY: u64 = 2048;

fuzz_target!(|data: &[u8]| {
    let Some(mem) = common::memory() else {
        return;
    };
    let q = MockSplitQueue::new(&mem, 16);
    let Some(descs) = common::descriptors(&mem, data) else {
        return;
    };
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
