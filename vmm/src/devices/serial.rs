//! COM1: vm-superio's 16550A model behind port 0x3f8, raising IRQ 4
//! through an irqfd. Output goes to any writer (stdout for the binary, a
//! buffer in tests). No input yet.

use std::io::Write;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports COM1 decodes.
pub const COM1_LEN: u16 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// An irqfd-backed interrupt line.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The console UART.
pub type ConsoleSerial = Serial<IrqLine, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

/// Creates COM1 writing to `out`, interrupting through `irq`.
pub fn console(irq: EventFd, out: Box<dyn Write + Send>) -> ConsoleSerial {
    Serial::new(IrqLine(irq), out)
}
