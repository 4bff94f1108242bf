//! `cocoon-vmm` as a program: every bad input gets one clear line and a
//! non-zero exit, never a panic; a good config boots and reports.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::{Command, Output};

const VMM: &str = env!("CARGO_BIN_EXE_cocoon-vmm");

fn run(args: &[&str]) -> Output {
    Command::new(VMM)
        .args(args)
        .output()
        .expect("spawn cocoon-vmm")
}

/// Asserts a failed run with exit 1 and a single error line containing `want`.
fn assert_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "the VMM panicked: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got: {stderr}"
    );
    assert!(stderr.starts_with("cocoon-vmm: error: "), "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in {stderr:?}");
}

fn tiny_kernel(dir: &tempfile::TempDir, memsz: u64) -> String {
    let code = [common::debug_port(1), common::i8042_reset()].concat();
    common::write(dir, "tiny.elf", &common::elf(&code, memsz, false))
        .display()
        .to_string()
}

#[test]
fn missing_kernel() {
    assert_error(
        &run(&["--kernel", "/nonexistent/vmlinux"]),
        "cannot read kernel /nonexistent/vmlinux: No such file",
    );
}

#[test]
fn unreadable_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    assert_error(&run(&["--kernel", &path]), "Is a directory");
}

#[test]
fn file_that_is_not_a_kernel() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let p = common::write(&dir, "notes.txt", b"just some text, not a kernel\n");
    assert_error(
        &run(&["--kernel", p.to_str().unwrap()]),
        "is neither an ELF vmlinux nor a bzImage",
    );
}

#[test]
fn memory_too_small_for_the_kernel() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 64 << 20);
    assert_error(
        &run(&["--kernel", &k, "--memory-mib", "32"]),
        "too small for the kernel and initramfs",
    );
}

#[test]
fn memory_too_small_for_the_initramfs() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    let initrd = common::write(&dir, "big.cpio", &vec![0u8; 40 << 20]);
    assert_error(
        &run(&[
            "--kernel",
            &k,
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory-mib",
            "32",
        ]),
        "too small",
    );
}

#[test]
fn missing_initramfs() {
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    assert_error(
        &run(&["--kernel", &k, "--initrd", "/nonexistent.img"]),
        "cannot read initramfs /nonexistent.img",
    );
}

#[test]
fn zero_vcpus() {
    assert_error(
        &run(&["--kernel", "/k", "--vcpus", "0"]),
        "vcpus must be between 1 and 254, not 0",
    );
}

#[test]
fn more_vcpus_than_allowed() {
    assert_error(
        &run(&["--kernel", "/k", "--vcpus", "1000"]),
        "vcpus must be between 1 and 254, not 1000",
    );
}

#[test]
fn absurd_memory() {
    assert_error(
        &run(&["--kernel", "/k", "--memory-mib", "0"]),
        "memory_mib must be between",
    );
}

#[test]
fn command_line_too_long() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    let long = "x".repeat(3000);
    assert_error(
        &run(&["--kernel", &k, "--cmdline", &long]),
        "kernel command line is",
    );
}

#[test]
fn config_with_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write(&dir, "vm.json", br#"{"kernel": "/k", "memory": 128}"#);
    assert_error(
        &run(&["--config", cfg.to_str().unwrap()]),
        "unknown field `memory`",
    );
}

#[test]
fn kvm_device_missing() {
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    // Hide /dev in a private mount namespace.
    let out = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /dev && exec \"$0\" \"$@\"",
            VMM,
            "--kernel",
            &k,
        ])
        .output()
        .expect("spawn unshare (util-linux)");
    assert_error(&out, "/dev/kvm does not exist");
}

#[test]
fn kvm_device_not_accessible() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            VMM,
            "--kernel",
            &k,
        ])
        .output()
        .expect("spawn setpriv (util-linux)");
    assert_error(&out, "/dev/kvm is not accessible");
}

#[test]
fn json_config_boots_and_reports_boot_complete() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    let cfg = common::write(
        &dir,
        "vm.json",
        format!(r#"{{"kernel": "{k}", "vcpus": 2, "memory_mib": 32}}"#).as_bytes(),
    );
    let out = run(&["--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cocoon-vmm: boot-complete ms="), "{stderr}");
    assert!(stderr.contains("cocoon-vmm: guest reset"), "{stderr}");
}

#[test]
fn console_flag_puts_the_serial_port_on_stdout() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let code = [common::serial_write(b"hello\n"), common::i8042_reset()].concat();
    let k = common::write(&dir, "tiny.elf", &common::elf(&code, 0x1000, false));
    let out = run(&[
        "--kernel",
        k.to_str().unwrap(),
        "--memory-mib",
        "32",
        "--console",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn net_tap_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    assert_error(
        &run(&["--kernel", &k, "--net", "tap=cocoon-nx9"]),
        "tap device 'cocoon-nx9' not found",
    );
}

#[test]
fn net_tap_name_too_long() {
    assert_error(
        &run(&["--kernel", "/k", "--net", "tap=a-very-long-tapname"]),
        "tap name 'a-very-long-tapname' is longer than 15 bytes (IFNAMSIZ)",
    );
}

#[test]
fn net_bad_mac() {
    assert_error(
        &run(&["--kernel", "/k", "--net", "tap=t0,mac=02:00:00:00:00"]),
        "invalid MAC address '02:00:00:00:00'",
    );
    assert_error(
        &run(&["--kernel", "/k", "--net", "tap=t0,mac=01:00:5e:00:00:01"]),
        "is multicast",
    );
    assert_error(
        &run(&["--kernel", "/k", "--net", "tap=t0,mac=00:00:00:00:00:00"]),
        "is all zero",
    );
}

#[test]
fn net_flag_without_tap() {
    assert_error(
        &run(&["--kernel", "/k", "--net", "cctap0"]),
        "invalid --net \"cctap0\": expected tap=NAME[,mac=MAC]",
    );
}

#[test]
fn net_config_with_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write(
        &dir,
        "vm.json",
        br#"{"kernel": "/k", "net": [{"tap": "t0", "ip": "10.0.2.2"}]}"#,
    );
    assert_error(
        &run(&["--config", cfg.to_str().unwrap()]),
        "unknown field `ip`",
    );
}

#[test]
fn seccomp_flag_takes_on_log_or_off() {
    common::require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = tiny_kernel(&dir, 0x1000);
    for mode in ["on", "log", "off"] {
        let out = run(&["--kernel", &k, "--memory-mib", "32", "--seccomp", mode]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "--seccomp {mode}: {stderr}");
        assert!(stderr.contains("cocoon-vmm: guest reset"), "{stderr}");
    }
    let out = run(&["--kernel", &k, "--seccomp", "strict"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid seccomp mode \"strict\": expected on, log or off"),
        "{stderr}"
    );
}

#[test]
fn seccomp_mode_in_the_json_config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write(&dir, "vm.json", br#"{"kernel": "/k", "seccomp": "strict"}"#);
    assert_error(
        &run(&["--config", cfg.to_str().unwrap()]),
        "unknown variant `strict`, expected one of `on`, `log`, `off`",
    );
}
