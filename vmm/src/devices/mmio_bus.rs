//! The MMIO bus: virtio-mmio register windows, one per device, at fixed
//! addresses in the MMIO hole, each with its own interrupt line. A vCPU's
//! MMIO exit is routed here; addresses outside every window read as
//! all-ones and ignore writes.

use std::sync::Mutex;

use super::virtio::mmio::{MmioTransport, MMIO_WINDOW};

/// Guest-physical address of the first device window.
pub const MMIO_BASE: u64 = 0xd000_0000;
/// First interrupt line for MMIO devices (IRQ 4 is COM1).
pub const FIRST_IRQ: u32 = 5;
/// Devices that fit: IRQs 5..=23 on the IOAPIC.
pub const MAX_DEVICES: usize = 19;

/// Address and IRQ of device slot `index`.
pub fn slot(index: usize) -> (u64, u32) {
    (
        MMIO_BASE + index as u64 * MMIO_WINDOW,
        FIRST_IRQ + index as u32,
    )
}

/// All virtio-mmio transports of a VM, by slot.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<Mutex<MmioTransport>>,
}

impl MmioBus {
    /// Adds the transport for the next slot.
    pub fn push(&mut self, transport: MmioTransport) {
        self.slots.push(Mutex::new(transport));
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the bus has no devices.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn find(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let rel = addr.checked_sub(MMIO_BASE)?;
        let index = usize::try_from(rel / MMIO_WINDOW).ok()?;
        self.slots.get(index).map(|t| (t, rel % MMIO_WINDOW))
    }

    /// Handles a guest MMIO read.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((t, off)) => match t.lock() {
                Ok(mut t) => t.read(off, data),
                Err(_) => data.fill(0xff),
            },
            None => data.fill(0xff),
        }
    }

    /// Handles a guest MMIO write.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((t, off)) = self.find(addr) {
            if let Ok(mut t) = t.lock() {
                t.write(off, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_laid_out_in_order() {
        assert_eq!(slot(0), (0xd000_0000, 5));
        assert_eq!(slot(18), (0xd001_2000, 23));
    }

    #[test]
    fn addresses_outside_windows_float_high() {
        let bus = MmioBus::default();
        let mut b = [0u8; 4];
        bus.read(MMIO_BASE, &mut b);
        assert_eq!(b, [0xff; 4]);
        bus.read(0, &mut b);
        bus.write(u64::MAX, &[1]);
    }
}
