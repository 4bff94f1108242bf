//! Fuzzes virtio-vsock TX chain reading: the input becomes a descriptor
//! table plus guest memory contents, and the first chain is read as a guest
//! packet. Reading must never panic or loop, and a packet it accepts must
//! carry exactly the payload its header announces, from the guest's CID.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use cocoon_vmm::devices::virtio::vsock::packet::{read_tx, Op};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;

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
    if let Ok((h, payload)) = read_tx(chain, 3) {
        assert_eq!(h.src_cid, 3);
        let want = if h.op == Op::Rw { h.len as usize } else { 0 };
        assert_eq!(payload.len(), want);
    }
});
