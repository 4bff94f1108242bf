//! The VMM's boot path, devices and exits, exercised with tiny hand-written
//! guests (no Linux needed), in process through the library.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_vmm::{GuestExit, RunOptions, RunReport, VmConfigFile};

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

fn boot(
    code: Vec<u8>,
    pvh: bool,
    vcpus: u32,
    memory_mib: u64,
    console: Option<Capture>,
) -> RunReport {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(&dir, "tiny.elf", &common::elf(&code, 0x1000, pvh));
    let config = VmConfigFile {
        kernel: Some(kernel),
        vcpus: Some(vcpus),
        memory_mib: Some(memory_mib),
        console: Some(console.is_some()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let opts = RunOptions {
            start: Instant::now(),
            console: console.map(|c| Box::new(c) as Box<dyn Write + Send>),
            events: None,
        };
        let _ = tx.send(cocoon_vmm::run(&config, opts));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the tiny guest did not stop within 60 s");
    drop(dir);
    report.expect("the VM failed")
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn long_mode_guest_reports_boot_complete_and_resets() {
    let r = boot(
        concat(&[common::debug_port(1), common::i8042_reset()]),
        false,
        1,
        32,
        None,
    );
    assert_eq!(r.exit, GuestExit::Reset);
    assert!(r.boot_complete.is_some(), "boot-complete was not recorded");
    assert!(r.first_entry.unwrap() <= r.boot_complete.unwrap());
}

#[test]
fn pvh_guest_runs_in_protected_mode() {
    let r = boot(
        concat(&[common::debug_port(1), common::i8042_reset()]),
        true,
        1,
        32,
        None,
    );
    assert_eq!(r.exit, GuestExit::Reset);
    assert!(r.boot_complete.is_some());
}

#[test]
fn power_off_request_ends_the_vm() {
    let r = boot(common::debug_port(2), false, 1, 32, None);
    assert_eq!(r.exit, GuestExit::PowerOff);
}

#[test]
fn serial_console_output_reaches_the_writer() {
    let out = Capture::default();
    let r = boot(
        concat(&[
            common::serial_write(b"hi from COM1\n"),
            common::i8042_reset(),
        ]),
        false,
        1,
        32,
        Some(out.clone()),
    );
    assert_eq!(r.exit, GuestExit::Reset);
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "hi from COM1\n"
    );
}

#[test]
fn panic_log_in_the_ramoops_region_is_reported() {
    let mem_mib = 32u64;
    let ramoops = (mem_mib << 20) - 0x1_0000;
    let msg = b"Panic#1 Part1\n<0>Kernel panic - not syncing: tiny guest gave up\n";
    let r = boot(
        concat(&[common::copy_to(ramoops + 64, msg), common::i8042_reset()]),
        false,
        1,
        mem_mib,
        None,
    );
    assert_eq!(r.exit, GuestExit::Panic("tiny guest gave up".into()));
}

#[test]
fn two_vcpus_are_created_and_stopped() {
    let r = boot(
        concat(&[common::debug_port(1), common::i8042_reset()]),
        false,
        2,
        32,
        None,
    );
    assert_eq!(r.exit, GuestExit::Reset);
}
