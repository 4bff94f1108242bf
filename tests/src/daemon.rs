//! A real `cocoond` on a temporary state directory and socket, driven
//! through the real `cocoon` CLI, for the end-to-end tests (`tests/vm/api.rs`,
//! `tests/vm/network.rs`). The binaries come from `$COCOOND` / `$COCOON_CLI`
//! (set by `make vm-test`), else from next to this test binary's target
//! directory.

#![allow(clippy::unwrap_used)] // test scaffolding: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{initrd, kernel, require_linux_kvm, vmm_bin, BOOT_DEADLINE};

/// Longest any single CLI command may take (a `run` boots a VM).
pub const CLI_DEADLINE: Duration = Duration::from_secs(700);

/// `cocoond` or `cocoon`: `$VAR`, else next to this test binary's target
/// directory.
pub fn api_bin(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/vm-HASH -> target/<profile>/NAME
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        p.exists(),
        "{} not found: set {var} or build it (`cargo build --release -p cocoon-api`)",
        p.display()
    );
    p
}

/// A cocoond process on its own state directory. Dropping it kills the
/// daemon and any VMM it left (so a failed test does not leak VMs).
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// More cocoond arguments.
    extra: Vec<String>,
}

impl Daemon {
    /// Starts a daemon on a fresh state directory and waits until it serves.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon (with `extra` arguments) that has the built-in
    /// busybox image imported.
    pub fn with_busybox(extra: &[&str]) -> Daemon {
        let d = Daemon::start_with(extra);
        d.ok(&["import", "--builtin", "busybox"]);
        d
    }

    /// Starts a daemon with more arguments (e.g. `--boot-timeout 600`,
    /// which replaces the default one).
    pub fn start_with(extra: &[&str]) -> Daemon {
        require_linux_kvm();
        let dir = tempfile::Builder::new()
            .prefix("cocoond")
            .tempdir()
            .unwrap();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut d = Daemon {
            child: None,
            dir,
            extra,
        };
        d.spawn();
        d
    }

    /// The running daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Its state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Its API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("cocoond.sock")
    }

    /// Everything it logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cocoond.log")).unwrap_or_default()
    }

    /// Starts (again) a daemon on the same state directory and socket.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cocoond.log"))
            .unwrap();
        let child = Command::new(api_bin("COCOOND", "cocoond"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--vmm")
            .arg(vmm_bin())
            .arg("--kernel")
            .arg(kernel())
            .arg("--initrd")
            .arg(initrd())
            .args(if self.extra.iter().any(|a| a == "--boot-timeout") {
                vec![]
            } else {
                vec![
                    "--boot-timeout".to_string(),
                    BOOT_DEADLINE.as_secs().to_string(),
                ]
            })
            .args(&self.extra)
            .env("COCOON_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.socket().exists() && self.cli(&["ps"]).status.success() {
                return;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cocoond exited ({s}) before serving\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "cocoond did not serve within 60 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("cocoond did not stop on SIGTERM\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `cocoon run -d ARGS...`: the new sandbox's id.
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        self.ok(&all).trim().to_string()
    }

    /// Waits (up to 60 s) until the sandbox's init has written `needle`.
    pub fn wait_for_log(&self, id: &str, needle: &str) {
        let start = Instant::now();
        while !self.ok(&["logs", id]).contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{needle:?} not in the log of {id}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the daemon with SIGKILL (no cleanup of its own) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /metrics` through the API socket.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: cocoond\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out.split_whitespace().nth(1), Some("200"), "{out}");
        out
    }

    /// The value of one metric line (`name` with its labels, if any).
    pub fn metric(&self, name: &str) -> f64 {
        let m = self.metrics();
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{m}"))
    }

    /// Waits (up to the boot deadline) until `metric(name) == value`.
    pub fn wait_metric(&self, name: &str, value: f64) {
        let start = Instant::now();
        while self.metric(name) != value {
            assert!(
                start.elapsed() < BOOT_DEADLINE,
                "{name} is not {value}\n{}\n{}",
                self.metrics(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The CLI with `args`, against this daemon, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(api_bin("COCOON_CLI", "cocoon"));
        c.arg("--socket").arg(self.socket()).args(args);
        c
    }

    /// Runs the CLI against this daemon, bounded by [`CLI_DEADLINE`].
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > CLI_DEADLINE {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "cocoon {args:?} did not finish within {CLI_DEADLINE:?}\n{}\n--- cocoond log\n{}",
                    show(&out),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    /// Runs the CLI and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "cocoon {args:?} failed\n{}\n--- cocoond log\n{}",
            show(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pids of live `cocoon-vmm` processes whose command line mentions this
    /// state directory (their disk and socket paths are under it).
    pub fn vmm_pids(&self) -> Vec<i32> {
        let needle = self.state().display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let is_vmm = argv0.ends_with(b"cocoon-vmm");
            if is_vmm && !zombie && String::from_utf8_lossy(&cmdline).contains(&needle) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Asserts nothing of any sandbox is left: no record, VMM, socket or file.
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.ok(&["ps", "-aq"]).trim(), "", "sandboxes remain");
        assert_eq!(self.vmm_pids(), Vec::<i32>::new(), "VMM processes remain");
        let left: Vec<PathBuf> = std::fs::read_dir(self.state().join("sandboxes"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, Vec::<PathBuf>::new(), "sandbox files remain");
    }

    /// `cocoon inspect ID` as JSON.
    pub fn inspect(&self, id: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", id])).unwrap();
        v[0].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.vmm_pids() {
            // SAFETY: kill(2) with a pid read from /proc; the worst case
            // is a signal to a process that has just exited.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Networks of sandboxes a failed test left (`network: default`):
        // their addresses would clash with the next test's sandboxes.
        let ids: Vec<String> = std::fs::read_dir(self.state().join("sandboxes"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if Path::new("/sys/class/net")
                .join(format!("coc{id}"))
                .exists()
            {
                let _ = Command::new("ip")
                    .args(["link", "del", &format!("coc{id}")])
                    .output();
            }
            if Path::new("/run/netns")
                .join(format!("cocoon-{id}"))
                .exists()
            {
                let _ = Command::new("ip")
                    .args(["netns", "del", &format!("cocoon-{id}")])
                    .output();
            }
        }
    }
}

/// A command's status and output, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
