//! Seccomp filters for the VMM's own threads: defence in depth behind the
//! VM boundary. Everything the VMM needs by path (kernel, initramfs, disks,
//! TAPs, /dev/kvm, the vsock listener) is opened before the guest runs, so
//! once it runs the threads only need a short list of system calls on file
//! descriptors they already hold.
//!
//! Two allow-lists, installed per thread (no TSYNC):
//! - [`ThreadKind::Vcpu`]: `KVM_RUN` and what a port or MMIO exit handler
//!   does (eventfd writes, the serial console, a virtio device activated or
//!   reset by the driver);
//! - [`ThreadKind::Vmm`]: the thread that runs the device event loop and,
//!   after the guest ends, tears the VM down: I/O on disks, TAPs, eventfds
//!   and Unix sockets, epoll, and `socket(AF_UNIX)` + `connect` for
//!   guest-initiated vsock connections.
//!
//! Per thread rather than process-wide because the VMM is also a library:
//! tests (and any embedder) run [`crate::run`] on a thread of a larger
//! process, which a TSYNC filter would confine as a whole. Threads share
//! memory, so an attacker who fully controls one thread can in principle
//! reach the other's list: the bound that holds for the process is the
//! union of the two, which still has no `open`, `execve`, `fork`/`clone`,
//! non-Unix sockets, `ptrace`, mount or KVM ioctls beyond `KVM_RUN`.
//!
//! This module builds and installs filters; it does not decide when (the
//! builder in `vm.rs` does: after the VM is built, before the first
//! `KVM_RUN`) and it does not jail the process (namespaces, chroot, user).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};
use vhost::vhost_kern::vhost_binding as vhost_ioctls;

/// What happens to a system call outside the allow-list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The process dies of SIGSYS, after a line on stderr naming the call.
    #[default]
    On,
    /// The call goes ahead and the kernel logs it (SECCOMP_RET_LOG, audit
    /// record type 1326): for finding what a new code path needs.
    Log,
    /// No filter.
    Off,
}

impl FromStr for SeccompMode {
    type Err = SeccompError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(SeccompMode::On),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            other => Err(SeccompError::Mode(other.to_string())),
        }
    }
}

impl fmt::Display for SeccompMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeccompMode::On => "on",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        })
    }
}

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Not one of the modes.
    #[error("invalid seccomp mode {0:?}: expected on, log or off")]
    Mode(String),
    /// seccompiler rejected a rule or could not compile the filter.
    #[error("building the {0} seccomp filter: {1}")]
    Build(&'static str, String),
    /// The kernel refused the filter.
    #[error("installing the {0} seccomp filter: {1}")]
    Install(&'static str, String),
}

/// Which allow-list a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread.
    Vcpu,
    /// The event-loop thread (the one that called [`crate::run`]).
    Vmm,
}

impl ThreadKind {
    fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Vmm => "vmm",
        }
    }
}

/// `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;

/// The vhost ioctls that start and stop a vhost-net device's rings.
const VHOST_RING_IOCTLS: [fn() -> u64; 8] = [
    vhost_ioctls::VHOST_SET_FEATURES,
    vhost_ioctls::VHOST_SET_VRING_NUM,
    vhost_ioctls::VHOST_SET_VRING_ADDR,
    vhost_ioctls::VHOST_SET_VRING_BASE,
    vhost_ioctls::VHOST_GET_VRING_BASE,
    vhost_ioctls::VHOST_SET_VRING_KICK,
    vhost_ioctls::VHOST_SET_VRING_CALL,
    vhost_ioctls::VHOST_NET_SET_BACKEND,
];

/// The compiled filters for one VM, ready to install.
pub struct Filters {
    mode: SeccompMode,
    vcpu: BpfProgram,
    vmm: BpfProgram,
    /// Calls refused with EPERM instead of killing (stacked under `vmm`).
    vmm_refused: BpfProgram,
}

impl Filters {
    /// Compiles both allow-lists for `mode`; `None` for [`SeccompMode::Off`].
    /// `pid` is this process (signals may only go to its own threads);
    /// `vhost` lets vCPU threads start and stop vhost-net rings.
    pub fn build(
        mode: SeccompMode,
        pid: libc::pid_t,
        vhost: bool,
    ) -> Result<Option<Filters>, SeccompError> {
        let mismatch = match mode {
            SeccompMode::On => SeccompAction::Trap,
            SeccompMode::Log => SeccompAction::Log,
            SeccompMode::Off => return Ok(None),
        };
        let compile = |kind: &'static str, rules, mismatch, on_match| {
            let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
                .map_err(|e| SeccompError::Build(kind, e.to_string()))?;
            BpfProgram::try_from(filter).map_err(|e| SeccompError::Build(kind, e.to_string()))
        };
        Ok(Some(Filters {
            mode,
            vcpu: compile(
                "vcpu",
                rules(ThreadKind::Vcpu, pid, vhost)?,
                mismatch.clone(),
                SeccompAction::Allow,
            )?,
            vmm: compile(
                "vmm",
                rules(ThreadKind::Vmm, pid, vhost)?,
                mismatch,
                SeccompAction::Allow,
            )?,
            vmm_refused: compile(
                "vmm",
                refused_rules(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::EPERM as u32),
            )?,
        }))
    }

    /// The mode these filters enforce.
    pub fn mode(&self) -> SeccompMode {
        self.mode
    }

    /// Installs the filter for `kind` on the calling thread (and, in `on`
    /// mode, the process's SIGSYS reporter). Irrevocable: threads this
    /// thread creates afterwards inherit the filter.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        if self.mode == SeccompMode::On {
            install_sigsys_reporter().map_err(|e| SeccompError::Install(kind.name(), e))?;
        }
        let err = |e: seccompiler::Error| SeccompError::Install(kind.name(), e.to_string());
        match kind {
            ThreadKind::Vcpu => seccompiler::apply_filter(&self.vcpu).map_err(err),
            ThreadKind::Vmm => {
                // The EPERM filter first: once the allow-list is in, the
                // seccomp(2) call for a second filter would be refused.
                seccompiler::apply_filter(&self.vmm_refused).map_err(err)?;
                seccompiler::apply_filter(&self.vmm).map_err(err)
            }
        }
    }
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build("rule", e.to_string()))
}

/// One rule per value: the call is allowed when argument `arg` equals any
/// of `values` (32-bit compare: ioctl requests, domains, signal numbers
/// and pids are `int`s to the kernel).
fn any_of(arg: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SeccompError> {
    values
        .iter()
        .map(|&v| {
            SeccompRule::new(vec![cond(arg, SeccompCmpOp::Eq, v)?])
                .map_err(|e| SeccompError::Build("rule", e.to_string()))
        })
        .collect()
}

/// Allowed when argument `arg` has none of the bits of `mask`.
fn without_bits(arg: u8, mask: u64) -> Result<Vec<SeccompRule>, SeccompError> {
    let rule = SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), 0)?])
        .map_err(|e| SeccompError::Build("rule", e.to_string()))?;
    Ok(vec![rule])
}

/// The allow-list of `kind`: syscall number → rules (empty: any arguments).
pub fn rules(
    kind: ThreadKind,
    pid: libc::pid_t,
    vhost: bool,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let any = Vec::new;
    // Both kinds: memory for the allocator (never executable), futexes,
    // clocks, the signals the VMM itself uses (the vCPU kick, abort on a
    // panic, Rust's stack-overflow report, the SIGSYS reporter), thread and
    // process exit, and write(2) for eventfds and the console/log.
    for nr in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_getrandom,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        m.insert(nr, any());
    }
    let prot_exec = libc::PROT_EXEC as u64;
    m.insert(libc::SYS_mmap, without_bits(2, prot_exec)?);
    m.insert(libc::SYS_mprotect, without_bits(2, prot_exec)?);
    m.insert(
        libc::SYS_rt_sigaction,
        any_of(
            0,
            &[libc::SIGSYS, libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS].map(|s| s as u64),
        )?,
    );
    m.insert(libc::SYS_tgkill, any_of(0, &[pid as u64])?);
    // F_GETFD only: std checks that an fd is open before closing it (in
    // debug builds).
    m.insert(libc::SYS_fcntl, any_of(1, &[libc::F_GETFD as u64])?);
    // TUNSETOFFLOAD: the net device renegotiates offloads when the driver
    // activates or resets it (an MMIO write, so on a vCPU thread today).
    let tun = libc::TUNSETOFFLOAD;
    match kind {
        ThreadKind::Vcpu => {
            let mut ioctls = vec![KVM_RUN, tun];
            if vhost {
                // vhost-net rings start and stop on activation and reset.
                // The memory table and the owner were set before the
                // filters, and no other vhost fd can be opened.
                ioctls.extend(VHOST_RING_IOCTLS.map(|f| f()));
            }
            m.insert(libc::SYS_ioctl, any_of(1, &ioctls)?);
        }
        ThreadKind::Vmm => {
            // Disks (preadv/pwritev, per segment read/write after lseek,
            // flush), TAPs (read/write, readv/writev), eventfds, vsock
            // streams (recvfrom from std's read, write), epoll.
            for nr in [
                libc::SYS_readv,
                libc::SYS_writev,
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_lseek,
                libc::SYS_fdatasync,
                libc::SYS_fsync,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                libc::SYS_accept4,
                libc::SYS_connect,
                libc::SYS_shutdown,
            ] {
                m.insert(nr, any());
            }
            // Let through here only so that the stacked filter's EPERM
            // wins (the kernel takes the most severe verdict of all
            // filters, and a trap outranks an errno): see refused_rules.
            for nr in refused_rules().into_keys() {
                m.insert(nr, any());
            }
            // Guest-initiated vsock connections go to `<socket>_<port>`:
            // Unix sockets only.
            m.insert(libc::SYS_socket, any_of(0, &[libc::AF_UNIX as u64])?);
            // FIONBIO: std's set_nonblocking on accepted/connected streams.
            m.insert(libc::SYS_ioctl, any_of(1, &[libc::FIONBIO, tun])?);
        }
    }
    Ok(m)
}

/// Calls the event-loop thread makes that are refused with EPERM rather
/// than killing: the vsock device removes its socket file when it is
/// dropped, and deleting files by path is not something a VMM that may be
/// compromised should keep. The runtime removes the socket file after the
/// VMM exits.
fn refused_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    [libc::SYS_unlink, libc::SYS_unlinkat]
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect()
}

/// Layout of `siginfo_t` for SIGSYS on x86_64 (`_sigsys` in the kernel's
/// `union __sifields`, after three ints and padding).
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// Names of calls a VMM bug or exploit is likely to try (the full table is
/// `/usr/include/x86_64-linux-gnu/asm/unistd_64.h` or `ausyscall N`).
fn syscall_name(nr: i64) -> &'static str {
    match nr {
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_openat2 => "openat2",
        libc::SYS_execve => "execve",
        libc::SYS_execveat => "execveat",
        libc::SYS_clone => "clone",
        libc::SYS_clone3 => "clone3",
        libc::SYS_fork => "fork",
        libc::SYS_vfork => "vfork",
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_bind => "bind",
        libc::SYS_listen => "listen",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_recvmsg => "recvmsg",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_mmap => "mmap",
        libc::SYS_mprotect => "mprotect",
        libc::SYS_ptrace => "ptrace",
        libc::SYS_kill => "kill",
        libc::SYS_tgkill => "tgkill",
        libc::SYS_rt_sigaction => "rt_sigaction",
        libc::SYS_fcntl => "fcntl",
        libc::SYS_fstat => "fstat",
        libc::SYS_newfstatat => "newfstatat",
        libc::SYS_statx => "statx",
        libc::SYS_prctl => "prctl",
        libc::SYS_seccomp => "seccomp",
        libc::SYS_mount => "mount",
        libc::SYS_unlink => "unlink",
        libc::SYS_unlinkat => "unlinkat",
        libc::SYS_setns => "setns",
        libc::SYS_unshare => "unshare",
        libc::SYS_epoll_create1 => "epoll_create1",
        libc::SYS_eventfd2 => "eventfd2",
        libc::SYS_dup => "dup",
        libc::SYS_dup3 => "dup3",
        libc::SYS_sendfile => "sendfile",
        libc::SYS_recvmmsg => "recvmmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        libc::SYS_preadv2 => "preadv2",
        libc::SYS_pwritev2 => "pwritev2",
        libc::SYS_ppoll => "ppoll",
        libc::SYS_poll => "poll",
        libc::SYS_io_uring_setup => "io_uring_setup",
        libc::SYS_io_uring_enter => "io_uring_enter",
        _ => "?",
    }
}

/// Formats `n` in decimal into `buf`; returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Builds the report line for a blocked call into `out`; returns its length.
fn report_line(nr: i64, tid: i64, out: &mut [u8; 160]) -> usize {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    let mut digits = [0u8; 20];
    put(b"cocoon-vmm: seccomp: blocked system call ");
    put(decimal(nr.max(0) as u64, &mut digits));
    put(b" (");
    put(syscall_name(nr).as_bytes());
    put(b") on thread ");
    put(decimal(tid.max(0) as u64, &mut digits));
    put(b"; killing the VMM (--seccomp=log to find what is missing)\n");
    len
}

/// Async-signal-safe: writes the report with raw system calls, then lets
/// SIGSYS kill the process (so its parent sees "killed by SIGSYS").
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS raised by
    // seccomp (SA_SIGINFO is set); `SigsysInfo` mirrors its x86_64 layout.
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    let mut line = [0u8; 160];
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let len = report_line(i64::from(nr), tid, &mut line);
    // SAFETY: writes `len` bytes of a live stack buffer to stderr; write,
    // sigaction, sigprocmask, getpid and tgkill are async-signal-safe and
    // allowed by every filter here.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len);
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGSYS, &dfl, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGSYS);
        // Not reached: the default action of SIGSYS ends the process.
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// Installs the SIGSYS handler that reports a blocked call (once per
/// process).
fn install_sigsys_reporter() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is an
        // `extern "C"` function with the SA_SIGINFO signature that only
        // makes async-signal-safe calls.
        let rc = unsafe {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_sigsys;
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler as usize;
            act.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            result = Err(format!(
                "SIGSYS handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [SeccompMode::On, SeccompMode::Log, SeccompMode::Off] {
            assert_eq!(m.to_string().parse::<SeccompMode>().unwrap(), m);
        }
        let e = "strict".parse::<SeccompMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid seccomp mode \"strict\": expected on, log or off"
        );
        assert_eq!(SeccompMode::default(), SeccompMode::On);
    }

    #[test]
    fn both_lists_compile_in_every_mode() {
        let pid = std::process::id() as libc::pid_t;
        assert!(Filters::build(SeccompMode::Off, pid, true)
            .unwrap()
            .is_none());
        for mode in [SeccompMode::On, SeccompMode::Log] {
            let f = Filters::build(mode, pid, true).unwrap().unwrap();
            assert_eq!(f.mode(), mode);
            assert!(!f.vcpu.is_empty() && !f.vmm.is_empty() && !f.vmm_refused.is_empty());
        }
    }

    #[test]
    fn vhost_ring_ioctls_only_on_vcpu_threads_of_a_vhost_vm() {
        let ioctls = |kind, vhost| {
            let mut r = rules(kind, 1, vhost).unwrap();
            format!("{:?}", r.remove(&libc::SYS_ioctl).unwrap())
        };
        let show = |v: &[u64]| format!("{:?}", any_of(1, v).unwrap());
        let base = [KVM_RUN, libc::TUNSETOFFLOAD];
        let ring: Vec<u64> = VHOST_RING_IOCTLS.iter().map(|f| f()).collect();
        let with: Vec<u64> = base.iter().chain(&ring).copied().collect();
        assert_eq!(ioctls(ThreadKind::Vcpu, false), show(&base));
        assert_eq!(ioctls(ThreadKind::Vcpu, true), show(&with));
        assert_eq!(
            ioctls(ThreadKind::Vmm, true),
            ioctls(ThreadKind::Vmm, false)
        );
        // The owner and the memory table are set before the filters.
        for later in [
            vhost_ioctls::VHOST_SET_OWNER(),
            vhost_ioctls::VHOST_RESET_OWNER(),
            vhost_ioctls::VHOST_SET_MEM_TABLE(),
        ] {
            assert!(!ring.contains(&later));
        }
    }

    #[test]
    fn lists_leave_out_what_a_compromised_vmm_wants() {
        for kind in [ThreadKind::Vcpu, ThreadKind::Vmm] {
            let r = rules(kind, 1, false).unwrap();
            for nr in [
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_openat2,
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_ptrace,
                libc::SYS_kill,
                libc::SYS_mount,
                libc::SYS_setns,
                libc::SYS_unshare,
                libc::SYS_bind,
                libc::SYS_listen,
                libc::SYS_prctl,
                libc::SYS_seccomp,
            ] {
                assert!(!r.contains_key(&nr), "{kind:?} allows {nr}");
            }
            // Files are never deleted: refused (EPERM) on the VMM thread,
            // not allowed at all on vCPU threads.
            for nr in [libc::SYS_unlink, libc::SYS_unlinkat] {
                assert!(
                    refused_rules().contains_key(&nr)
                        && (kind == ThreadKind::Vmm || !r.contains_key(&nr))
                );
            }
            // Arguments are checked where they matter.
            for nr in [
                libc::SYS_ioctl,
                libc::SYS_mmap,
                libc::SYS_mprotect,
                libc::SYS_tgkill,
                libc::SYS_rt_sigaction,
                libc::SYS_fcntl,
            ] {
                assert!(!r[&nr].is_empty(), "{kind:?}: {nr} without argument checks");
            }
        }
        let vcpu = rules(ThreadKind::Vcpu, 1, false).unwrap();
        for nr in [libc::SYS_socket, libc::SYS_connect, libc::SYS_accept4] {
            assert!(!vcpu.contains_key(&nr), "vCPU threads need no sockets");
        }
        let vmm = rules(ThreadKind::Vmm, 1, false).unwrap();
        assert!(!vmm[&libc::SYS_socket].is_empty(), "socket: AF_UNIX only");
    }

    #[test]
    fn report_line_names_the_call() {
        let mut out = [0u8; 160];
        let n = report_line(libc::SYS_execve, 4242, &mut out);
        let s = std::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(
            s,
            "cocoon-vmm: seccomp: blocked system call 59 (execve) on thread 4242; \
             killing the VMM (--seccomp=log to find what is missing)\n"
        );
        let n = report_line(999, 0, &mut out);
        assert!(std::str::from_utf8(&out[..n])
            .unwrap()
            .contains("call 999 (?) on thread 0;"));
    }
}
