//! Writes milestone codes to the VMM's debug port (see cocoon-vmm's
//! `devices::debug_port`): one port write, one cheap VM exit.

/// Port number, shared with the VMM.
pub const PORT: u16 = 0x0cc0;
/// The agent is up.
pub const BOOT_COMPLETE: u8 = 0x01;
/// Filesystems are synced; power the VM off.
pub const POWER_OFF: u8 = 0x02;
/// The agent's first action as PID 1 (boot-time breakdown).
pub const INIT_STARTED: u8 = 0x03;

/// Writes `code` to the debug port.
pub fn signal(code: u8) -> std::io::Result<()> {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(libc::c_ulong::from(PORT), 1, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ioperm above granted access to exactly this port; writing a
    // byte to it has no effect on this process's memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") PORT, in("al") code, options(nomem, nostack, preserves_flags));
    }
    Ok(())
}
