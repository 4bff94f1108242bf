//! Fuzzes virtio-net chain parsing: the input becomes a descriptor table
//! (address, length, flags, next for each entry), and the first available
//! chain is parsed both as a TX frame and as an RX buffer. Parsing must
//! never panic; what it accepts must lie inside guest memory, within the
//! length bounds, and in the right direction.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use cocoon_vmm::devices::virtio::net::request::{parse_rx, parse_tx, MAX_RX_LEN, MAX_TX_LEN};
use cocoon_vmm::devices::virtio::net::{MIN_FRAME_LEN, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{GuestMemory, Permissions};

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
    if let Ok(frame) = parse_tx(chain.clone()) {
        let mut total = 0u64;
        for &(addr, len) in &frame.segments {
            assert!(len > 0 && mem.check_range(addr, len as usize, Permissions::Read));
            total += u64::from(len);
        }
        assert_eq!(total + VNET_HDR_LEN as u64, u64::from(frame.len));
        assert!(u64::from(frame.len) <= MAX_TX_LEN);
        assert!(frame.len as usize >= VNET_HDR_LEN + MIN_FRAME_LEN);
    }
    if let Ok(buf) = parse_rx(chain) {
        let mut total = 0u64;
        for &(addr, len) in &buf.segments {
            assert!(len > 0 && mem.check_range(addr, len as usize, Permissions::Write));
            total += u64::from(len);
        }
        assert_eq!(total, u64::from(buf.capacity));
        assert!(buf.capacity <= MAX_RX_LEN && buf.capacity as usize >= VNET_HDR_LEN);
    }
});
