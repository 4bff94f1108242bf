//! The vhost-net data path: with `vhost=on`, frames move between the TAP
//! and the guest's rings in the host kernel (`/dev/vhost-net`), so the
//! VMM's event loop never touches them. The VMM keeps the control plane:
//! feature negotiation, the config space, and telling the kernel where the
//! rings are when the driver activates the device.
//!
//! The kernel is given the guest's memory table once, at start-up, and
//! validates every descriptor against it. The ring addresses are given as
//! host addresses, so the VMM checks that each ring lies inside one memory
//! region before handing it over: a ring running off the end of a region
//! would otherwise let the kernel touch VMM memory next to it.
//!
//! Queue notifications go straight from KVM's ioeventfds to the kernel's
//! workers, and their interrupts straight to the device's irqfd. A
//! virtio-mmio driver reads the interrupt status register to learn why it
//! was interrupted; since the VMM no longer sees the interrupts, the
//! transport reports "used ring updated" on every read while vhost runs
//! (the driver then looks at its rings, which is what it would do anyway).

use std::fs::File;
use std::sync::Arc;

use vhost::net::VhostNet as _;
use vhost::vhost_kern::net::Net as KernelNet;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

use super::device::features;

/// Features the kernel must support for it to drive the rings as the guest
/// negotiated them (the rest of the guest's features are about the TAP or
/// the config space, which the kernel does not see).
const RING_FEATURES: u64 = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | features::MRG_RXBUF;

/// Errors setting up or starting vhost-net.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// A vhost ioctl (or opening `/dev/vhost-net`) failed.
    #[error("vhost-net: {0}: {1}")]
    Kernel(&'static str, vhost::Error),
    /// The guest's memory has more regions than vhost takes, or none.
    #[error("vhost-net: guest memory cannot be described to the kernel: {0}")]
    Memory(String),
    /// The kernel lacks a feature the guest negotiated.
    #[error("vhost-net: the kernel does not support features {0:#x} the guest negotiated")]
    Features(u64),
    /// A ring is not inside one region of guest memory.
    #[error("vhost-net: queue {0}: {1} is not inside one region of guest memory")]
    Ring(usize, &'static str),
}

/// Bytes of each part of a split ring of `size` entries: descriptor table,
/// available ring (with `used_event`), used ring (with `avail_event`).
pub fn ring_sizes(size: u16) -> [(&'static str, u64); 3] {
    let n = u64::from(size);
    [
        ("descriptor table", 16 * n),
        ("available ring", 6 + 2 * n),
        ("used ring", 6 + 8 * n),
    ]
}

/// Whether `[addr, addr + len)` lies inside a single region of `mem`.
pub fn in_one_region(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    let Some(region) = mem.find_region(GuestAddress(addr)) else {
        return false;
    };
    let offset = addr - region.start_addr().raw_value();
    offset
        .checked_add(len)
        .is_some_and(|end| end <= region.len())
}

/// Checks every ring of `queue` (index `index`) lies inside one region.
pub fn check_rings(mem: &GuestMemoryMmap, index: usize, queue: &Queue) -> Result<(), VhostError> {
    let addrs = [queue.desc_table(), queue.avail_ring(), queue.used_ring()];
    for ((what, len), addr) in ring_sizes(queue.size()).into_iter().zip(addrs) {
        if !in_one_region(mem, addr, len) {
            return Err(VhostError::Ring(index, what));
        }
    }
    Ok(())
}

/// What the kernel is given when the driver activates the device.
pub struct Rings<'a> {
    /// The features the driver acked.
    pub acked: u64,
    /// The RX and TX queues as the driver set them up.
    pub queues: &'a [Queue],
    /// Each queue's notification eventfd (KVM's ioeventfd).
    pub kicks: &'a [EventFd],
    /// The device's irqfd.
    pub call: &'a EventFd,
    /// The TAP the frames go through.
    pub tap: &'a File,
}

/// A vhost-net instance owned by this process, with the guest's memory
/// table loaded. Dropping it closes the device, which stops the kernel's
/// worker (no ioctl: the event-loop thread that drops it at teardown may
/// not make them).
pub struct VhostNet {
    kernel: KernelNet<Arc<GuestMemoryMmap>>,
    /// Features the kernel supports.
    supported: u64,
    /// Whether the kernel is moving frames (between `start` and `stop`).
    running: bool,
}

impl VhostNet {
    /// Opens `/dev/vhost-net`, becomes its owner (the kernel starts its
    /// worker for this process) and loads the memory table. Runs before
    /// the seccomp filters are installed (it opens a file).
    pub fn open(mem: &GuestMemoryMmap) -> Result<Self, VhostError> {
        let kernel = KernelNet::new(Arc::new(mem.clone()))
            .map_err(|e| VhostError::Kernel("opening /dev/vhost-net", e))?;
        kernel
            .set_owner()
            .map_err(|e| VhostError::Kernel("VHOST_SET_OWNER", e))?;
        let supported = kernel
            .get_features()
            .map_err(|e| VhostError::Kernel("VHOST_GET_FEATURES", e))?;
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().raw_value(),
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
            .collect();
        kernel
            .set_mem_table(&regions)
            .map_err(|e| VhostError::Memory(e.to_string()))?;
        Ok(VhostNet {
            kernel,
            supported,
            running: false,
        })
    }

    /// Hands the rings to the kernel, checked against `mem`. On an error
    /// nothing is left running.
    pub fn start(&mut self, mem: &GuestMemoryMmap, r: &Rings<'_>) -> Result<(), VhostError> {
        let missing = r.acked & RING_FEATURES & !self.supported;
        if missing != 0 {
            return Err(VhostError::Features(missing));
        }
        for (i, q) in r.queues.iter().enumerate() {
            check_rings(mem, i, q)?;
        }
        let result = self.start_rings(r);
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn start_rings(&mut self, r: &Rings<'_>) -> Result<(), VhostError> {
        let k = &self.kernel;
        let err = |what| move |e| VhostError::Kernel(what, e);
        k.set_features(r.acked & self.supported)
            .map_err(err("VHOST_SET_FEATURES"))?;
        for (i, (q, kick)) in r.queues.iter().zip(r.kicks).enumerate() {
            k.set_vring_num(i, q.size())
                .map_err(err("VHOST_SET_VRING_NUM"))?;
            let ring = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: q.desc_table(),
                used_ring_addr: q.used_ring(),
                avail_ring_addr: q.avail_ring(),
                log_addr: None,
            };
            k.set_vring_addr(i, &ring)
                .map_err(err("VHOST_SET_VRING_ADDR"))?;
            k.set_vring_base(i, q.next_avail())
                .map_err(err("VHOST_SET_VRING_BASE"))?;
            k.set_vring_call(i, r.call)
                .map_err(err("VHOST_SET_VRING_CALL"))?;
            k.set_vring_kick(i, kick)
                .map_err(err("VHOST_SET_VRING_KICK"))?;
        }
        self.running = true;
        for i in 0..r.queues.len() {
            k.set_backend(i, Some(r.tap))
                .map_err(err("VHOST_NET_SET_BACKEND"))?;
        }
        // The driver may have queued buffers (and kicked) before the
        // kernel listened, and on a re-activation the kick eventfds are the
        // same ones as before: make the kernel look at both rings once.
        for kick in r.kicks {
            let _ = kick.write(1);
        }
        Ok(())
    }

    /// Detaches the TAP from both rings: the kernel stops touching guest
    /// memory for this device. Errors are ignored (the device is being
    /// reset; a ring the kernel never had needs nothing).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        for i in 0..2 {
            // Detaching the TAP stops the kernel's work on the ring (and
            // waits for what is in flight).
            let _ = self.kernel.set_backend(i, None);
            // Where the ring was; asked as QEMU does, not needed here.
            let _ = self.kernel.get_vring_base(i);
        }
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn two_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
            (GuestAddress(0x40000), 0x1000),
        ])
        .unwrap()
    }

    #[test]
    fn rings_must_sit_in_one_region() {
        let m = two_regions();
        assert!(in_one_region(&m, 0, 0x10000));
        assert!(in_one_region(&m, 0xff00, 0x100));
        // Adjacent regions are still two mappings on the host.
        assert!(!in_one_region(&m, 0xff00, 0x101));
        assert!(in_one_region(&m, 0x10000, 0x10000));
        assert!(!in_one_region(&m, 0x1ffff, 2));
        // In a hole, past the end, overflowing.
        assert!(!in_one_region(&m, 0x20000, 1));
        assert!(!in_one_region(&m, 0x40fff, 2));
        assert!(!in_one_region(&m, 0x40000, u64::MAX));
        assert!(!in_one_region(&m, u64::MAX, 1));
    }

    #[test]
    fn ring_sizes_follow_the_split_layout() {
        let s = ring_sizes(256);
        assert_eq!(s[0].1, 4096);
        assert_eq!(s[1].1, 518);
        assert_eq!(s[2].1, 2054);
    }

    #[test]
    fn a_queue_straddling_two_regions_is_refused() {
        let m = two_regions();
        let mut q = Queue::new(256).unwrap();
        q.set_size(256);
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(0x3000), Some(0));
        q.set_used_ring_address(Some(0x4000), Some(0));
        assert!(check_rings(&m, 0, &q).is_ok());
        q.set_used_ring_address(Some(0xfc00), Some(0));
        assert!(matches!(
            check_rings(&m, 1, &q),
            Err(VhostError::Ring(1, "used ring"))
        ));
        q.set_used_ring_address(Some(0x4000), Some(0));
        q.set_desc_table_address(Some(0x40100), Some(0));
        assert!(matches!(
            check_rings(&m, 0, &q),
            Err(VhostError::Ring(0, "descriptor table"))
        ));
    }
}
