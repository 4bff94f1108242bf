//! virtio devices seen from a real guest: the guest test program
//! (tests/guest) runs the steps named on the command line and prints one
//! `cocoon-test:` line each; the host checks them against the image files.

use std::path::Path;

use cocoon_guest_test::{pattern_checksum, Fnv, Pattern};
use cocoon_tests::{kernel, require_linux_kvm, run_vmm, test_initrd, VmmRun, BOOT_DEADLINE};

const MIB: u64 = 1 << 20;

fn boot(disks: &[String], steps: &str) -> VmmRun {
    require_linux_kvm();
    let (k, i) = (kernel(), test_initrd());
    let cmdline = format!("quiet cocoon.test={steps}");
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        k.display().to_string(),
        "--initrd".into(),
        i.display().to_string(),
        "--memory-mib".into(),
        "256".into(),
        "--console".into(),
        "--cmdline".into(),
        cmdline,
    ];
    for d in disks {
        args.push("--disk".into());
        args.push(d.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_vmm(&refs, BOOT_DEADLINE);
    assert_eq!(run.status.code(), Some(0), "{}", run.dump());
    assert!(run.stdout.contains("cocoon-test: done"), "{}", run.dump());
    run
}

/// The `cocoon-test:` line starting with `prefix`, as key=value pairs.
fn result(run: &VmmRun, prefix: &str) -> Vec<(String, String)> {
    let line = run
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("cocoon-test: ")
                .filter(|r| r.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no result for {prefix:?}\n{}", run.dump()));
    line.split_whitespace()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn get(kv: &[(String, String)], key: &str) -> String {
    kv.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn write_pattern(path: &Path, seed: u64, len: u64) {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; len as usize];
    p.fill(&mut buf);
    std::fs::write(path, buf).unwrap();
}

fn file_checksum(path: &Path, len: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut h = Fnv::default();
    h.update(&bytes[..len as usize]);
    h.value()
}

#[test]
fn blk_guest_reads_what_the_host_wrote_and_the_host_reads_what_the_guest_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    write_pattern(&src, 11, 64 * MIB);
    std::fs::File::create(&dst)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let run = boot(
        &[
            format!("{},ro,id=src", src.display()),
            format!("{},id=dst", dst.display()),
        ],
        "read:vda,write:vdb:22:64",
    );
    let read = result(&run, "read vda");
    assert_eq!(get(&read, "bytes"), (64 * MIB).to_string());
    assert_eq!(
        get(&read, "sum"),
        format!("{:016x}", pattern_checksum(11, 64 * MIB)),
        "{}",
        run.dump()
    );
    let wrote = result(&run, "write vdb");
    assert_eq!(
        get(&wrote, "sum"),
        format!("{:016x}", pattern_checksum(22, 64 * MIB))
    );
    // The guest fsynced and powered off at once: the data must be in the file.
    assert_eq!(
        file_checksum(&dst, 64 * MIB),
        pattern_checksum(22, 64 * MIB)
    );
}

#[test]
fn blk_read_only_drive_refuses_writes_and_the_file_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ro.img");
    write_pattern(&img, 3, 8 * MIB);
    let before = file_checksum(&img, 8 * MIB);
    let run = boot(
        &[format!("{},ro,id=ro", img.display())],
        "disks,rowrite:vda,forcewrite:vda",
    );
    assert_eq!(get(&result(&run, "disk vda"), "ro"), "1");
    assert_eq!(get(&result(&run, "rowrite vda"), "result"), "refused");
    // Past the guest kernel's own check, the device itself says no.
    let forced = result(&run, "forcewrite vda");
    assert_eq!(get(&forced, "result"), "refused", "{}", run.dump());
    assert_eq!(file_checksum(&img, 8 * MIB), before);
}

#[test]
fn blk_four_drives_with_ids_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut disks = Vec::new();
    for (i, mib) in [1u64, 2, 3, 4].iter().enumerate() {
        let p = dir.path().join(format!("d{i}.img"));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib * MIB)
            .unwrap();
        disks.push(format!("{},id=drive-{i}", p.display()));
    }
    let run = boot(&disks, "disks");
    for (i, dev) in ["vda", "vdb", "vdc", "vdd"].iter().enumerate() {
        let kv = result(&run, &format!("disk {dev}"));
        assert_eq!(
            get(&kv, "sectors"),
            ((i as u64 + 1) * MIB / 512).to_string(),
            "{}",
            run.dump()
        );
        assert_eq!(get(&kv, "serial"), format!("drive-{i}"));
    }
}

#[test]
fn blk_sparse_file_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sparse.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let run = boot(
        &[format!("{},id=sparse", img.display())],
        "write:vda:9:1,disks",
    );
    assert_eq!(
        get(&result(&run, "disk vda"), "sectors"),
        ((1u64 << 30) / 512).to_string()
    );
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap());
    assert!(
        blocks * 512 < 8 * MIB,
        "a 1 GiB image with 1 MiB written uses {} bytes",
        blocks * 512
    );
}

#[test]
fn rng_guest_reads_1mib_from_hwrng_and_its_pool_is_ready_at_boot() {
    let run = boot(&[], "getrandom,rng:1024");
    assert_eq!(
        get(&result(&run, "getrandom"), "ready"),
        "yes",
        "{}",
        run.dump()
    );
    let kv = result(&run, "rng");
    assert_eq!(get(&kv, "bytes"), "1048576");
    assert_eq!(get(&kv, "source"), "virtio_rng.0");
    let zeros: usize = get(&kv, "zero_bytes").parse().unwrap();
    assert!(zeros < 8192, "{zeros} zero bytes in 1 MiB of random data");
}
