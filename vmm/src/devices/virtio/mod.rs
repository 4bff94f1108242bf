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

use std::sync::atomic::{AtomicU32, Ordering};
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
}

impl Interrupt {
    /// Wraps an irqfd (already registered with KVM).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt(Arc::new(InterruptInner {
            status: AtomicU32::new(0),
            irqfd,
        }))
    }

    /// Sets `bits` in the status register and injects the interrupt.
    pub fn trigger(&self, bits: u32) {
        self.0.status.fetch_or(bits, Ordering::SeqCst);
        // An eventfd write fails only when its counter would overflow, in
        // which case an interrupt is pending anyway.
        let _ = self.0.irqfd.write(1);
    }

    /// The status register.
    pub fn status(&self) -> u32 {
        self.0.status.load(Ordering::SeqCst)
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
/// ring, and the guest is interrupted once at the end if it wants to be.
pub fn serve_queue<F>(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    mut handle: F,
) where
    F: FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
{
    let mut used_any = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let used_len = handle(chain);
        if queue.add_used(mem, head, used_len).is_err() {
            // The used ring is unusable: stop rather than spin.
            break;
        }
        used_any = true;
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
