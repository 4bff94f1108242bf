//! Booting real guests: what the guest sees, and how it ends.

use cocoon_tests::{debian_bzimage, initrd, kernel, require_linux_kvm, run_vmm, BOOT_DEADLINE};

fn boot_summary(vcpus: u32, memory_mib: u64, extra: &str) -> cocoon_tests::VmmRun {
    require_linux_kvm();
    let (k, i) = (kernel(), initrd());
    let cmdline = format!("quiet cocoon.mode=summary {extra}");
    let v = vcpus.to_string();
    let m = memory_mib.to_string();
    run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--vcpus",
            &v,
            "--memory-mib",
            &m,
            "--console",
            "--cmdline",
            &cmdline,
        ],
        BOOT_DEADLINE,
    )
}

fn assert_ram_close(run: &cocoon_tests::VmmRun, memory_mib: u64) {
    let ram_kib: u64 = run
        .summary("ram_kib")
        .unwrap_or_else(|| panic!("no summary line\n{}", run.dump()))
        .parse()
        .unwrap();
    let want = memory_mib * 1024;
    assert!(
        ram_kib <= want && want - ram_kib < 2 * 1024,
        "guest sees {ram_kib} KiB of RAM, asked for {want} KiB\n{}",
        run.dump()
    );
}

#[test]
fn guest_sees_one_vcpu_and_its_memory_and_powers_off_cleanly() {
    let run = boot_summary(1, 128, "");
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert_eq!(run.summary("cpus").as_deref(), Some("1"), "{}", run.dump());
    assert_ram_close(&run, 128);
    assert!(
        run.summary("kernel")
            .is_some_and(|k| k.ends_with("-cocoon")),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr.contains("cocoon-vmm: boot-complete ms="),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr.contains("cocoon-vmm: guest powered off"),
        "{}",
        run.dump()
    );
}

#[test]
fn guest_sees_two_vcpus_and_its_memory() {
    let run = boot_summary(2, 256, "");
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert_eq!(run.summary("cpus").as_deref(), Some("2"), "{}", run.dump());
    assert_ram_close(&run, 256);
}

#[test]
fn i8042_reset_exits_zero() {
    require_linux_kvm();
    let (k, i) = (kernel(), initrd());
    let run = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--cmdline",
            "cocoon.mode=reboot",
        ],
        BOOT_DEADLINE,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert!(
        run.stderr.contains("cocoon-vmm: guest reset"),
        "{}",
        run.dump()
    );
}

#[test]
fn guest_kernel_panic_exits_with_the_panic_code_and_reason() {
    require_linux_kvm();
    let (k, i) = (kernel(), initrd());
    let run = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--cmdline",
            "cocoon.mode=panic",
        ],
        BOOT_DEADLINE,
    );
    assert_eq!(
        run.status.code(),
        Some(cocoon_vmm::EXIT_GUEST_PANIC),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr.contains(
            "cocoon-vmm: guest kernel panic: Attempted to kill init! exitcode=0x00000100"
        ),
        "{}",
        run.dump()
    );
}

#[test]
fn json_config_boots_like_flags() {
    require_linux_kvm();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vm.json");
    let json = format!(
        r#"{{"kernel": "{}", "initrd": "{}", "vcpus": 2, "memory_mib": 192, "console": true, "cmdline": "quiet cocoon.mode=summary"}}"#,
        kernel().display(),
        initrd().display()
    );
    std::fs::write(&cfg, json).unwrap();
    let run = run_vmm(&["--config", cfg.to_str().unwrap()], BOOT_DEADLINE);
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert_eq!(run.summary("cpus").as_deref(), Some("2"), "{}", run.dump());
    assert_ram_close(&run, 192);
}

#[test]
fn debian_bzimage_boots_to_the_agent() {
    require_linux_kvm();
    let bz = debian_bzimage();
    let i = initrd();
    let run = run_vmm(
        &[
            "--kernel",
            bz.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--memory-mib",
            "512",
            "--console",
            "--cmdline",
            "quiet loglevel=1 cocoon.mode=summary",
        ],
        BOOT_DEADLINE,
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert_eq!(run.summary("cpus").as_deref(), Some("1"), "{}", run.dump());
    assert!(
        run.summary("kernel").is_some_and(|k| k.ends_with("-amd64")),
        "{}",
        run.dump()
    );
    assert!(run.stderr.contains("boot-complete ms="), "{}", run.dump());
}
