//! Host network helpers shared by the VM tests: running `ip`, and listing
//! what sandbox networking leaves on the machine.

use std::process::Command;

/// Runs `ip ARGS`, failing the test with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("spawn ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every sandbox namespace (`cocoon-` and 12 hex digits) and host-side
/// sandbox interface (`coc...`) on the machine.
pub fn all_sandbox_links() -> Vec<String> {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left: Vec<String> = names("/run/netns")
        .into_iter()
        .filter(|n| {
            n.strip_prefix("cocoon-")
                .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    left.extend(
        names("/sys/class/net")
            .into_iter()
            .filter(|n| n.starts_with("coc")),
    );
    left
}
