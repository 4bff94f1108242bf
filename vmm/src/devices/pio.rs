//! The port-I/O bus: turns a vCPU's port exit into a device access and
//! reports VM-level events (reset, power-off, boot-complete) to the caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::I8042Device;

use super::debug_port::{DebugCode, DEBUG_PORT};
use super::serial::{ConsoleSerial, COM1_BASE, COM1_LEN};

/// i8042 data port.
pub const I8042_DATA: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND: u16 = 0x64;

/// Something a port write asks of the VM as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioEvent {
    /// The guest pulsed the i8042 reset line.
    Reset,
    /// The agent asked to be powered off.
    PowerOff,
    /// The agent reported that it is up.
    BootComplete,
    /// The agent started running as PID 1.
    InitStarted,
}

/// The i8042's reset line: a flag the bus reads back after each write.
struct ResetLine(Arc<AtomicBool>);

impl vm_superio::Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Port-exit counters, by device.
#[derive(Debug, Default)]
pub struct PioCounters {
    /// Accesses to COM1.
    pub serial: AtomicU64,
    /// Accesses to the i8042.
    pub i8042: AtomicU64,
    /// Writes to the debug port.
    pub debug: AtomicU64,
    /// Accesses to ports no device claims.
    pub unclaimed: AtomicU64,
}

/// All port-I/O devices of a VM.
pub struct PioBus {
    serial: Option<Mutex<ConsoleSerial>>,
    i8042: Mutex<I8042Device<ResetLine>>,
    reset: Arc<AtomicBool>,
    /// Exit counters.
    pub counters: PioCounters,
}

impl PioBus {
    /// A bus with an optional console.
    pub fn new(serial: Option<ConsoleSerial>) -> Self {
        let reset = Arc::new(AtomicBool::new(false));
        PioBus {
            serial: serial.map(Mutex::new),
            i8042: Mutex::new(I8042Device::new(ResetLine(reset.clone()))),
            reset,
            counters: PioCounters::default(),
        }
    }

    fn serial_offset(port: u16) -> Option<u8> {
        (COM1_BASE..COM1_BASE + COM1_LEN)
            .contains(&port)
            .then(|| (port - COM1_BASE) as u8)
    }

    /// Handles a port read of `data.len()` bytes.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match (port, Self::serial_offset(port), &self.serial) {
            (_, Some(off), Some(serial)) if data.len() == 1 => {
                self.counters.serial.fetch_add(1, Ordering::Relaxed);
                data[0] = serial.lock().map(|mut s| s.read(off)).unwrap_or(0xff);
            }
            (I8042_DATA | I8042_COMMAND, _, _) if data.len() == 1 => {
                // Status 0: no data waiting, input buffer empty.
                self.counters.i8042.fetch_add(1, Ordering::Relaxed);
                data[0] = 0;
            }
            _ => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                data.fill(0xff);
            }
        }
    }

    /// Handles a port write; returns the VM-level event it caused, if any.
    pub fn write(&self, port: u16, data: &[u8]) -> Option<PioEvent> {
        match (port, Self::serial_offset(port), &self.serial) {
            (_, Some(off), Some(serial)) if data.len() == 1 => {
                self.counters.serial.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut s) = serial.lock() {
                    // A failed console write (closed stdout) must not stop the VM.
                    let _ = s.write(off, data[0]);
                }
                None
            }
            (I8042_DATA | I8042_COMMAND, _, _) if data.len() == 1 => {
                self.counters.i8042.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut dev) = self.i8042.lock() {
                    let _ = dev.write((port - I8042_DATA) as u8, data[0]);
                }
                self.reset
                    .swap(false, Ordering::SeqCst)
                    .then_some(PioEvent::Reset)
            }
            (DEBUG_PORT, _, _) if data.len() == 1 => {
                self.counters.debug.fetch_add(1, Ordering::Relaxed);
                match DebugCode::from(data[0]) {
                    DebugCode::BootComplete => Some(PioEvent::BootComplete),
                    DebugCode::PowerOff => Some(PioEvent::PowerOff),
                    DebugCode::InitStarted => Some(PioEvent::InitStarted),
                    DebugCode::Unknown(_) => None,
                }
            }
            _ => {
                self.counters.unclaimed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8042_reset_command_is_reported() {
        let bus = PioBus::new(None);
        assert_eq!(bus.write(I8042_COMMAND, &[0xfe]), Some(PioEvent::Reset));
        assert_eq!(bus.write(I8042_COMMAND, &[0xaa]), None);
        assert_eq!(bus.write(I8042_DATA, &[0xfe]), None);
        let mut b = [9u8];
        bus.read(I8042_COMMAND, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn unclaimed_ports_float_high_and_odd_widths_are_ignored() {
        let bus = PioBus::new(None);
        let mut b = [0u8; 4];
        bus.read(0x3f8, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(bus.write(DEBUG_PORT, &[1, 0]), None);
        assert_eq!(bus.write(I8042_COMMAND, &[0xfe, 0]), None);
        assert_eq!(bus.counters.unclaimed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn debug_port_codes() {
        let bus = PioBus::new(None);
        assert_eq!(bus.write(DEBUG_PORT, &[1]), Some(PioEvent::BootComplete));
        assert_eq!(bus.write(DEBUG_PORT, &[2]), Some(PioEvent::PowerOff));
        assert_eq!(bus.write(DEBUG_PORT, &[7]), None);
    }
}
