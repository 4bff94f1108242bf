//! Cocoon's debug port: a one-byte-wide port the guest agent writes to tell
//! the VMM about milestones. Writes are the only operation; each code is a
//! single exit, so it costs almost nothing even where exits are expensive.

/// The port number. Nothing on a PC lives at 0xcc0.
pub const DEBUG_PORT: u16 = 0x0cc0;

/// What a byte written to the port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugCode {
    /// The agent is up and serving (`boot-complete`).
    BootComplete,
    /// The agent's first instruction as PID 1 (for boot-time breakdowns).
    InitStarted,
    /// The agent has synced its filesystems and asks to be powered off.
    PowerOff,
    /// Any other value: counted, otherwise ignored.
    Unknown(u8),
}

impl From<u8> for DebugCode {
    fn from(v: u8) -> Self {
        match v {
            0x01 => DebugCode::BootComplete,
            0x02 => DebugCode::PowerOff,
            0x03 => DebugCode::InitStarted,
            other => DebugCode::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_has_a_meaning() {
        assert_eq!(DebugCode::from(1), DebugCode::BootComplete);
        assert_eq!(DebugCode::from(2), DebugCode::PowerOff);
        assert_eq!(DebugCode::from(3), DebugCode::InitStarted);
        assert_eq!(DebugCode::from(0xff), DebugCode::Unknown(0xff));
    }
}
