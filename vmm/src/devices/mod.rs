//! Legacy port-I/O devices and the bus that dispatches vCPU port exits to
//! them: the 8250 serial console (only with `--console`), the i8042 (its
//! reset line ends the VM) and Cocoon's debug port (boot-complete and
//! power-off from the agent). Unclaimed ports read as all-ones and ignore
//! writes, as an empty ISA bus does. Virtio devices sit on the MMIO bus.

pub mod debug_port;
pub mod mmio_bus;
pub mod pio;
pub mod serial;
pub mod virtio;
