//! Helpers for Cocoon's integration tests: where the built artefacts are,
//! a check that this machine's KVM can boot Linux, running the VMM binary
//! with a deadline, and (in [`sandbox`]) a booted VM with the agent
//! connected. Run the tests through `make vm-test`, which puts them in the
//! test machine when this host cannot boot Linux guests.

#![warn(missing_docs)]

pub mod daemon;
pub mod hostnet;
pub mod sandbox;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn artefact(var: &str, rel: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(rel));
    assert!(
        p.exists(),
        "{} not found (set {var} or run `make build`)",
        p.display()
    );
    p
}

/// The guest kernel (`build/vmlinux`, or `$COCOON_KERNEL`).
pub fn kernel() -> PathBuf {
    artefact("COCOON_KERNEL", "build/vmlinux")
}

/// The agent initramfs (`build/initramfs.img`, or `$COCOON_INITRD`).
pub fn initrd() -> PathBuf {
    artefact("COCOON_INITRD", "build/initramfs.img")
}

/// The device-test initramfs (`build/test-initramfs.img`, or
/// `$COCOON_TEST_INITRD`): the guest test program as /init.
pub fn test_initrd() -> PathBuf {
    artefact("COCOON_TEST_INITRD", "build/test-initramfs.img")
}

/// The VMM binary (`target/release/cocoon-vmm`, or `$COCOON_VMM`).
pub fn vmm_bin() -> PathBuf {
    artefact("COCOON_VMM", "target/release/cocoon-vmm")
}

/// Debian's stock kernel (a bzImage) from /boot, newest first.
pub fn debian_bzimage() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
    });
    found.sort();
    found
        .pop()
        .expect("no /boot/vmlinuz-*-amd64: install Debian's linux-image-amd64 (scripts/deps.sh)")
}

/// Fails (never skips) unless this machine's KVM can boot a Linux guest:
/// /dev/kvm usable and the CPU has VMX or SVM (true on hardware hosts and
/// inside the test machine; false on kvm_pvm hosts).
pub fn require_linux_kvm() {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert!(
        usable,
        "/dev/kvm is missing or not accessible: VM tests need KVM (run them with `make vm-test`)"
    );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    assert!(
        hw,
        "this CPU has no VMX/SVM, so its KVM cannot boot Linux guests: run the VM tests through tests/machine/run (`make vm-test`)"
    );
}

/// What a VMM run produced.
#[derive(Debug)]
pub struct VmmRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Guest console and anything else on stdout.
    pub stdout: String,
    /// The VMM's own messages.
    pub stderr: String,
}

impl VmmRun {
    /// The agent's summary line fields, e.g. `cpus`, `ram_kib`, `kernel`.
    pub fn summary(&self, key: &str) -> Option<String> {
        let line = self.stdout.lines().find_map(|l| {
            l.split_once("cocoon-agent: summary ")
                .map(|(_, rest)| rest.to_string())
        })?;
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "status: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the VMM binary with `args`, killing it after `deadline`.
pub fn run_vmm(args: &[&str], deadline: Duration) -> VmmRun {
    run_vmm_via(&[], args, deadline)
}

/// Runs the VMM binary under a wrapper command (`wrapper` followed by the
/// VMM's path and `args`, e.g. `ip netns exec NS`), killing it after
/// `deadline`.
pub fn run_vmm_via(wrapper: &[&str], args: &[&str], deadline: Duration) -> VmmRun {
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(vmm_bin());
            c
        }
        None => Command::new(vmm_bin()),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cocoon-vmm");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > deadline {
            let pid = child.id();
            let threads = task_states(pid);
            let _ = child.kill();
            // A VMM stuck in the kernel (a vCPU thread in D state) cannot be
            // reaped; say so instead of hanging the whole test run.
            let reaped = wait_bounded(&mut child, Duration::from_secs(20));
            if reaped.is_none() {
                panic!(
                    "cocoon-vmm {args:?} did not finish within {deadline:?} and could not be \
                     reaped 20 s after SIGKILL; its threads before the kill:\n{threads}\nnow:\n{}",
                    task_states(pid)
                );
            }
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!("cocoon-vmm {args:?} did not finish within {deadline:?}\n--- threads\n{threads}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\nstatus {reaped:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    VmmRun {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One line per thread of `pid`: name, state and kernel wait channel, for
/// diagnosing a VMM that stopped making progress.
pub fn task_states(pid: u32) -> String {
    let mut out = String::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(no /proc/{pid}/task)");
    };
    for t in dir.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        let stack: String = read("stack")
            .lines()
            .take(8)
            .collect::<Vec<_>>()
            .join(" < ");
        out += &format!(
            "  tid {} {} state {} wchan {} {}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan").trim(),
            stack
        );
    }
    out
}

/// Boot deadline generous enough for the nested test machine.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(240);
