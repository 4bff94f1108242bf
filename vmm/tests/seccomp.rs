//! The seccomp filters are enforced: a call outside the allow-list kills
//! the process with SIGSYS (after a line on stderr naming it), `log` lets
//! it through, and allowed calls with allowed arguments work. Each case
//! runs in a fresh copy of this test binary (a filter cannot be removed,
//! and a killed test would take the harness with it): the parent test
//! re-runs the binary with `COCOON_SECCOMP_CHILD` set, which only the
//! `child` test acts on.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use cocoon_vmm::seccomp::{Filters, SeccompMode, ThreadKind};

const CHILD_ENV: &str = "COCOON_SECCOMP_CHILD";

/// Runs `case` (`<mode>:<thread kind>:<call>`) in a child copy of this binary.
fn run_child(case: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .output()
        .unwrap()
}

/// The child side: installs the filter on this thread, then makes the call.
#[test]
fn child() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return; // a normal test run: nothing to do
    };
    let mut parts = case.split(':');
    let (mode, kind, call) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mode: SeccompMode = mode.parse().unwrap();
    let kind = match kind {
        "vcpu" => ThreadKind::Vcpu,
        _ => ThreadKind::Vmm,
    };
    let filters = Filters::build(mode, std::process::id() as libc::pid_t, false)
        .unwrap()
        .unwrap();
    filters.install(kind).unwrap();
    // SAFETY: plain system calls with constant arguments; the fds they
    // may return are closed right away.
    let rc = unsafe {
        match call {
            "socket_inet" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket_unix" => libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            "openat" => libc::openat(libc::AT_FDCWD, c"/etc/hostname".as_ptr(), libc::O_RDONLY),
            "execve" => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr())
            }
            "mmap_exec" => {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    -1
                } else {
                    0
                }
            }
            "ioctl_kvm_create_vm" => libc::ioctl(0, 0xae01, 0), // KVM_CREATE_VM
            "unlink" => libc::unlink(c"/nonexistent/cocoon-seccomp-test".as_ptr()),
            other => panic!("unknown call {other}"),
        }
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if rc >= 0 && matches!(call, "socket_inet" | "socket_unix" | "openat") {
        // SAFETY: closing the fd the call above returned.
        unsafe { libc::close(rc) };
    }
    // The parent reads this line to see that the call came back.
    println!("RESULT rc={} errno={errno}", rc.min(0));
}

fn assert_killed(case: &str, name: &str) {
    let out = run_child(case);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{case}: expected death by SIGSYS, got {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("cocoon-vmm: seccomp: blocked system call")
            && stderr.contains(&format!("({name})")),
        "{case}: no report naming {name}: {stderr}"
    );
    assert!(!stdout.contains("RESULT"), "{case}: the call returned");
}

fn assert_returned(case: &str, want: &str) {
    let out = run_child(case);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(want),
        "{case}: expected {want:?}, got {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn forbidden_calls_kill_the_process_with_sigsys() {
    assert_killed("on:vmm:execve", "execve");
    assert_killed("on:vmm:openat", "openat");
    assert_killed("on:vmm:socket_inet", "socket");
    assert_killed("on:vmm:mmap_exec", "mmap");
    assert_killed("on:vmm:ioctl_kvm_create_vm", "ioctl");
    assert_killed("on:vcpu:socket_unix", "socket");
    assert_killed("on:vcpu:execve", "execve");
}

#[test]
fn allowed_calls_work_under_the_filter() {
    // Guest-initiated vsock connections need Unix sockets.
    assert_returned("on:vmm:socket_unix", "RESULT rc=0 ");
}

#[test]
fn unlink_is_refused_with_eperm_not_killed() {
    assert_returned(
        "on:vmm:unlink",
        &format!("RESULT rc=-1 errno={}", libc::EPERM),
    );
}

#[test]
fn log_mode_lets_forbidden_calls_through() {
    assert_returned("log:vmm:socket_inet", "RESULT rc=0 ");
    assert_returned("log:vcpu:openat", "RESULT rc=0 ");
}
