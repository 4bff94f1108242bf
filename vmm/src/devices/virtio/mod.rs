//! Virtio devices and their virtio-mmio transport. A device implements
//! [`VirtioDevice`] (what the transport needs) and event-manager's
//! `MutEventSubscriber` (what its queues and backend need); the transport
//! (`mmio.rs`) owns the register interface and the queues until the driver
//! activates the device. Every device folder has the same files:
//! `device.rs` (state, config space, activation), `event_handler.rs`
//! (eventfd wiring), `request.rs` where requests have structure (parsing a
//! descriptor chain into a typed request, no I/O), `io.rs` (the backend;
//! `tap.rs` for net).

pub mod block;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit every Cocoon device offers and requires: the modern interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Ring feature: the driver and the device say, through `used_event` and
/// `avail_event`, how far the other may go before it must interrupt or
/// notify (virtio 1.2, 2.7.10).
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Interrupt status bit: a used ring was updated.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration changed (or the device needs a reset).
pub const INT_CONFIG: u32 = 2;

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a queue the device cannot use.
    #[error("queue {0} is not usable: {1}")]
    BadQueue(usize, &'static str),
    /// Wrong number of queues.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues given.
        got: usize,
    },
    /// The device's backend refused the negotiated configuration.
    #[error("backend: {0}")]
    Backend(String),
}

/// An interrupt line shared by a transport and its device: the status
/// register the driver reads, and the irqfd that injects the interrupt.
#[derive(Clone)]
pub struct Interrupt(Arc<InterruptInner>);

struct InterruptInner {
    status: AtomicU32,
    irqfd: EventFd,
    /// Something outside the VMM (vhost) signals the irqfd for used rings.
    rings_elsewhere: AtomicBool,
}

impl Interrupt {
    /// Wraps an irqfd (already registered with KVM).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt(Arc::new(InterruptInner {
            status: AtomicU32::new(0),
            irqfd,
            rings_elsewhere: AtomicBool::new(false),
        }))
    }

    /// Sets `bits` in the status register and injects the interrupt.
    pub fn trigger(&self, bits: u32) {
        self.0.status.fetch_or(bits, Ordering::SeqCst);
        // An eventfd write fails only when its counter would overflow, in
        // which case an interrupt is pending anyway.
        let _ = self.0.irqfd.write(1);
    }

    /// The status register. While the rings are served elsewhere (see
    /// [`Interrupt::set_rings_elsewhere`]) it always has `INT_VRING`.
    pub fn status(&self) -> u32 {
        let s = self.0.status.load(Ordering::SeqCst);
        if self.0.rings_elsewhere.load(Ordering::SeqCst) {
            s | INT_VRING
        } else {
            s
        }
    }

    /// Says whether the used rings are served, and the irqfd signalled, by
    /// something the VMM does not see (the kernel's vhost worker). The
    /// driver then cannot be told which interrupt was a used-ring one, so
    /// every status read says it was: the driver looks at its rings.
    pub fn set_rings_elsewhere(&self, on: bool) {
        self.0.rings_elsewhere.store(on, Ordering::SeqCst);
    }

    /// Clears acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.0.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd, for registration with KVM.
    pub fn irqfd(&self) -> &EventFd {
        &self.0.irqfd
    }
}

/// What the transport needs from a device.
pub trait VirtioDevice: Send {
    /// Virtio device id (2 block, 4 rng, 1 net, 19 vsock).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered to the driver.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space; ignored unless a device has writable fields.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// One eventfd per queue, signalled by KVM (ioeventfd) when the driver notifies.
    fn queue_events(&self) -> &[EventFd];
    /// Starts the device with the queues the driver set up.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// Gives the device the guest's memory once it exists, before any
    /// seccomp filter (for backends that must be told about it up front).
    fn attach_memory(&mut self, _mem: &GuestMemoryMmap) -> Result<(), ActivateError> {
        Ok(())
    }
    /// Stops the device and forgets its queues (driver wrote 0 to Status).
    fn reset(&mut self);
}

/// Checks that the driver set up exactly the `expected` queues a device has.
pub fn expect_queues(queues: Vec<Queue>, expected: usize) -> Result<Vec<Queue>, ActivateError> {
    if queues.len() != expected {
        return Err(ActivateError::QueueCount {
            expected,
            got: queues.len(),
        });
    }
    Ok(queues)
}

/// Serves every chain available on `queue`: `handle` turns each into the
/// number of bytes it wrote to guest memory, the chain goes back on the used
/// ring, and the guest is interrupted once at the end if it wants to be
/// (its `used_event` with EVENT_IDX). Kicks are off while the queue is
/// drained and re-armed (`avail_event` moved to the next entry, with
/// EVENT_IDX) before returning, with a last look for chains queued in
/// between; a second empty look means the avail index lies, and ends it.
pub fn serve_queue<F>(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    mut handle: F,
) where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let mut used_any = false;
    let mut idle_rounds = 0;
    let _ = queue.disable_notification(mem);
    loop {
        let mut popped = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            popped = true;
            let head = chain.head_index();
            let used_len = handle(chain);
            // Fails only for a head outside the table (the chain was
            // empty): that entry cannot be returned.
            let _ = queue.add_used(mem, head, used_len);
            used_any = true;
        }
        if !popped {
            idle_rounds += 1;
        }
        match queue.enable_notification(mem) {
            Ok(true) if idle_rounds < 2 => continue,
            _ => break,
        }
    }
    if used_any && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.trigger(INT_VRING);
    }
}

/// Reads `data.len()` bytes at `offset` from a byte image of a config space.
pub fn read_config_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= space.len() {
        return;
    }
    let n = data.len().min(space.len() - start);
    data[..n].copy_from_slice(&space[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    #[test]
    fn config_reads_are_bounded() {
        let space = [1u8, 2, 3, 4];
        let mut b = [9u8; 4];
        read_config_bytes(&space, 2, &mut b);
        assert_eq!(b, [3, 4, 0, 0]);
        read_config_bytes(&space, 100, &mut b);
        assert_eq!(b, [0; 4]);
        read_config_bytes(&space, u64::MAX, &mut b);
        assert_eq!(b, [0; 4]);
    }

    /// A queue over a mock's table and avail ring, its used ring at
    /// 0x1000 (the mock's own overlaps its avail ring's end), EVENT_IDX on.
    fn event_idx_queue(mock: &MockSplitQueue<GuestMemoryMmap>) -> Queue {
        let mut q: Queue = mock.create_queue().unwrap();
        q.set_used_ring_address(Some(0x1000), Some(0));
        q.set_event_idx(true);
        q
    }

    #[test]
    fn serve_queue_follows_event_idx() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mock = MockSplitQueue::new(&m, 16);
        for i in 0..3u16 {
            let d = RawDescriptor::from(SplitDescriptor::new(
                0x8000 + u64::from(i) * 0x100,
                16,
                0,
                0,
            ));
            mock.add_desc_chains(&[d], i).unwrap();
        }
        let mut q = event_idx_queue(&mock);
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Interrupt::new(irq.try_clone().unwrap());
        let used_event = mock.avail_addr().unchecked_add(4 + 2 * 16);
        let avail_event = GuestAddress(0x1000 + 4 + 8 * 16);
        m.write_obj(5u16, used_event).unwrap();
        let mut served = 0;
        serve_queue(&mut q, &m, &interrupt, |_| {
            served += 1;
            0
        });
        assert_eq!(served, 3);
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x1002)).unwrap(), 3);
        assert_eq!(
            m.read_obj::<u16>(avail_event).unwrap(),
            3,
            "kick at the next entry"
        );
        assert!(irq.read().is_err(), "used index 3 has not passed 5");
        // A lying avail index: served nothing, returns.
        m.write_obj(1000u16, mock.avail_addr().unchecked_add(2))
            .unwrap();
        serve_queue(&mut q, &m, &interrupt, |_| {
            served += 1;
            0
        });
        assert_eq!(served, 3);
    }

    #[test]
    fn interrupt_status_is_set_and_acked() {
        let i = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        i.trigger(INT_VRING);
        assert_eq!(i.status(), INT_VRING);
        assert_eq!(i.irqfd().read().unwrap(), 1);
        i.ack(INT_VRING);
        assert_eq!(i.status(), 0);
    }
}
