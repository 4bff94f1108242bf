//! PID 1 duties: base mounts, console, orphan reaping, and ending the VM.
//! Failures to mount are reported but not fatal: a missing /sys must not
//! stop the agent from answering.

use std::ffi::CString;

use crate::{debug_port, log};

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) {
    let _ = std::fs::create_dir_all(target);
    let (Ok(src), Ok(tgt), Ok(fs), Ok(dat)) = (
        CString::new(source),
        CString::new(target),
        CString::new(fstype),
        CString::new(data),
    ) else {
        return;
    };
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            dat.as_ptr().cast(),
        )
    };
    if rc != 0 {
        log(&format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn attach_console() {
    let Ok(path) = CString::new("/dev/console") else {
        return;
    };
    // SAFETY: path is a valid C string; the fd is checked before use.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    for target in 0..3 {
        // SAFETY: fd is open; dup2 onto the standard descriptors is what PID 1 wants.
        unsafe { libc::dup2(fd, target) };
    }
    if fd > 2 {
        // SAFETY: fd is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and cgroup2,
/// and points stdin/stdout/stderr at the console.
pub fn setup() {
    let nodev_nosuid_noexec = libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755");
    attach_console();
    mount("proc", "/proc", "proc", nodev_nosuid_noexec, "");
    mount("sysfs", "/sys", "sysfs", nodev_nosuid_noexec, "");
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0620,ptmxmode=0666",
    );
    mount(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        libc::MS_NODEV | libc::MS_NOSUID,
        "mode=1777",
    );
    mount(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NODEV | libc::MS_NOSUID,
        "mode=0755",
    );
    mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NODEV | libc::MS_NOSUID,
        "mode=1777",
    );
    mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nodev_nosuid_noexec,
        "",
    );
}

/// Reaps every child that exits, forever.
pub fn reap_forever() -> ! {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            // No children: sleep until a signal (SIGCHLD has no handler, so
            // this only returns when the agent is given work later).
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
}

/// Waits until everything written to the console has left the UART, so the
/// last lines are not cut off by the VM ending.
fn drain_console() {
    // SAFETY: tcdrain on a descriptor we own; an error (not a tty) is harmless.
    unsafe { libc::tcdrain(1) };
}

/// Syncs and asks the VMM to power the VM off; falls back to a reset on a
/// VMM without Cocoon's debug port.
pub fn power_off() -> ! {
    drain_console();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    if let Err(e) = debug_port::signal(debug_port::POWER_OFF) {
        log(&format!("cannot signal power-off: {e}"));
    }
    reboot()
}

/// Syncs and resets the VM through the kernel (an i8042 reset on Cocoon).
pub fn reboot() -> ! {
    drain_console();
    // SAFETY: sync and reboot have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    log(&format!(
        "reboot failed: {}",
        std::io::Error::last_os_error()
    ));
    reap_forever()
}

/// Moves the agent's root from the initramfs onto a tmpfs (with the
/// filesystems `setup` mounted), as switch_root does. pivot_root cannot
/// leave the initramfs, and containers need pivot_root: a chroot would let
/// a workload with CAP_SYS_CHROOT walk back out to the agent's mounts.
pub fn leave_initramfs() -> std::io::Result<()> {
    use crate::sys::{check, cstr, mount as mnt};
    let new = "/.agent-root";
    std::fs::create_dir_all(new)?;
    mnt(
        "tmpfs",
        new,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    )?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        let target = format!("{new}/{d}");
        std::fs::create_dir_all(&target)?;
        mnt(&format!("/{d}"), &target, "", libc::MS_MOVE, "")?;
    }
    std::env::set_current_dir(new)?;
    mnt(".", "/", "", libc::MS_MOVE, "")?;
    let dot = cstr(".")?;
    // SAFETY: a valid C string; chroot to the tmpfs now mounted on /.
    check(unsafe { libc::chroot(dot.as_ptr()) })?;
    std::env::set_current_dir("/")
}
