//! Fuzzes virtio-vsock TX chain reading: the input becomes a descriptor
//! table plus guest memory contents, and the first chain is read as a guest
//! packet. Reading must never panic or loop, and a packet it accepts must
//! carry exactly the payload its header announces, from the guest's CID.
#![no_main]

use cocoon_vmm::devices::virtio::vsock::packet::{read_tx, Op};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 0x40_0000;

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    let q = MockSplitQueue::new(&mem, 16);
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
    if let Ok((h, payload)) = read_tx(chain, 3) {
        assert_eq!(h.src_cid, 3);
        let want = if h.op == Op::Rw { h.len as usize } else { 0 };
        assert_eq!(payload.len(), want);
    }
});
