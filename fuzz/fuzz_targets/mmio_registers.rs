//! Fuzzes the virtio-mmio register interface with a real device (rng): the
//! input is a sequence of (offset, width, read/write, value) accesses. No
//! sequence may panic the transport or the device.
#![no_main]

use std::sync::{Arc, Mutex};

use cocoon_vmm::devices::virtio::mmio::MmioTransport;
use cocoon_vmm::devices::virtio::rng::Rng;
use cocoon_vmm::devices::virtio::{Interrupt, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]) else {
        return;
    };
    let Ok(rng) = Rng::new() else { return };
    let Ok(irq) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(rng));
    let mut t = MmioTransport::new(device, mem, Interrupt::new(irq));
    for op in data.chunks_exact(8) {
        let offset = u64::from(u16::from_le_bytes([op[0], op[1]])) & 0xfff;
        let width = [1usize, 2, 4, 8][usize::from(op[2] & 3)];
        let value = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&value.to_le_bytes());
        if op[3] & 1 == 0 {
            t.read(offset, &mut buf[..width]);
        } else {
            t.write(offset, &buf[..width]);
        }
    }
});
