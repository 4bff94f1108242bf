//! The VMM runs a real guest with its seccomp filters on (the default):
//! every one of its threads is filtered while the guest boots, serves the
//! agent over vsock and uses its disks.

use cocoon_tests::sandbox::Sandbox;

/// (thread name, value of `Seccomp:`) for every thread of `pid`.
fn seccomp_by_thread(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        out.push((field("Name:"), field("Seccomp:")));
    }
    out.sort();
    out
}

#[test]
fn every_vmm_thread_runs_the_guest_under_a_seccomp_filter() {
    let sb = Sandbox::boot_default();
    // Block I/O and vsock traffic under the filters, then look.
    let out = sb.run(&["sh", "-c", "echo filtered > /tmp/f && sync && cat /tmp/f"]);
    assert_eq!(out.stdout, "filtered\n", "{}", sb.diagnostics());
    let threads = seccomp_by_thread(sb.vmm_pid());
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["cocoon-vmm", "vcpu0", "vcpu1"],
        "unexpected VMM threads: {threads:?}"
    );
    for (name, mode) in &threads {
        // 2 = SECCOMP_MODE_FILTER
        assert_eq!(mode, "2", "thread {name} is not filtered: {threads:?}");
    }
    assert!(sb.vmm_exited().is_none(), "{}", sb.diagnostics());
    // And the guest goes on working.
    let out = sb.run(&["cat", "/tmp/f"]);
    assert_eq!(out.stdout, "filtered\n", "{}", sb.diagnostics());
}
