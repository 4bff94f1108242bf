//! The VMM as a library: repeated boots in one process leave nothing behind.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_tests::{initrd, kernel, require_linux_kvm, BOOT_DEADLINE};
use cocoon_vmm::{GuestExit, RunOptions, VmConfigFile};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn status_field(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn boot_once() {
    let config = VmConfigFile {
        kernel: Some(kernel()),
        initrd: Some(initrd()),
        cmdline: Some("cocoon.mode=summary".into()),
        vcpus: Some(2),
        memory_mib: Some(128),
        console: Some(true),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let out = Capture::default();
    let opts = RunOptions {
        start: Instant::now(),
        console: Some(Box::new(out.clone())),
        events: None,
    };
    // A deadline, so a guest that hangs fails the test with its console
    // instead of hanging the run.
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = tx.send(cocoon_vmm::run(&config, opts));
    });
    let result = rx.recv_timeout(BOOT_DEADLINE);
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).to_string();
    let report = match result {
        Ok(r) => r.expect("boot"),
        Err(_) => panic!("the guest did not stop within {BOOT_DEADLINE:?}; console:\n{text}"),
    };
    runner.join().unwrap();
    assert_eq!(report.exit, GuestExit::PowerOff, "{text}");
    assert!(text.contains("cocoon-agent: summary cpus=2"), "{text}");
    assert!(report.boot_complete.is_some());
}

#[test]
fn ten_boots_in_a_row_leak_no_threads_fds_or_memory() {
    require_linux_kvm();
    boot_once(); // warm-up: one-time allocations (signal handler, stdio)
    let (threads, fds, rss) = (status_field("Threads:"), open_fds(), status_field("VmRSS:"));
    for _ in 0..10 {
        boot_once();
    }
    // A joined thread's task leaves the thread group a moment after
    // pthread_join returns (the join wakes on CLONE_CHILD_CLEARTID, before
    // the task is released), so let the count settle before comparing.
    let settle = Instant::now();
    while status_field("Threads:") > threads && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (threads2, fds2, rss2) = (status_field("Threads:"), open_fds(), status_field("VmRSS:"));
    assert_eq!(
        threads2, threads,
        "threads before {threads}, after {threads2}"
    );
    assert_eq!(fds2, fds, "open fds before {fds}, after {fds2}");
    assert!(
        rss2 < rss + 8 * 1024,
        "RSS grew from {rss} KiB to {rss2} KiB over 10 boots"
    );
}
