//! Fuzzes the virtio-net receive path's bookkeeping (`net::rx`): the input
//! becomes a descriptor table whose chains are all available on an RX
//! queue, then frames of input-chosen lengths are received into the chains
//! the device takes (the TAP read is a callback that checks the segments
//! it is offered). Nothing may panic; every segment offered lies inside
//! guest memory and is writable; a frame that fit uses at least one buffer
//! and at most those held (exactly one without mergeable buffers), and one
//! that did not fit uses none.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use cocoon_vmm::devices::virtio::net::request::MAX_RX_LEN;
use cocoon_vmm::devices::virtio::net::rx::{Received, RxBuffers};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{GuestMemory, Permissions};

fuzz_target!(|data: &[u8]| {
    // One flags byte, 7 frame lengths, then the descriptor table.
    if data.len() < 8 {
        return;
    }
    let (ctl, data) = data.split_at(8);
    let Some(mem) = common::memory() else {
        return;
    };
    let mock = MockSplitQueue::new(&mem, 16);
    let Some(descs) = common::descriptors(&mem, data) else {
        return;
    };
    if mock.add_desc_chains(&descs, 0).is_err() {
        return;
    }
    let Ok(mut q) = mock.create_queue::<Queue>() else {
        return;
    };
    let mergeable = ctl[0] & 1 != 0;
    let (want, max) = if mergeable {
        (MAX_RX_LEN as usize, 16)
    } else {
        (1, 1)
    };
    let mut bufs = RxBuffers::new();
    for &l in &ctl[1..] {
        bufs.take(&mut q, &mem, want, max);
        if bufs.is_empty() {
            break;
        }
        let held = bufs.len();
        let len = usize::from(l) * 300;
        let r = bufs.receive(&mut q, &mem, mergeable, |segs| {
            for &(addr, n) in segs {
                assert!(n > 0 && mem.check_range(addr, n as usize, Permissions::Write));
            }
            Ok(len)
        });
        match r {
            Received::Frame { buffers, .. } => {
                assert!(buffers >= 1 && buffers <= held);
                assert!(mergeable || buffers == 1);
                assert_eq!(bufs.len(), held - buffers);
            }
            Received::Truncated(_) | Received::Runt(_) => assert_eq!(bufs.len(), held),
            Received::Error(e) => panic!("the callback never fails: {e}"),
        }
    }
});
