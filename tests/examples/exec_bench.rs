//! Cocoon's side of the exec benchmark (bench/exec.sh): boots a sandbox
//! with the busybox root disk, then
//! - execs `true` into the running container N times (exec + wait, no
//!   stdio), after 5 warm-up runs;
//! - streams 256 MiB from one process's stdout (`head -c ... /dev/zero`).
//!
//! Prints one JSON line: {"p50_ms", "p99_ms", "n", "stdout_mibs"}. Needs
//! Linux KVM (run it through tests/machine/run).

use std::time::Instant;

use cocoon_runtime::agent::Stdio;
use cocoon_tests::sandbox::{process, Sandbox, OP_DEADLINE};

const STDOUT_BYTES: u64 = 256 << 20;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let sb = Sandbox::boot_default();
    let none = Stdio {
        stdin: false,
        stdout: false,
        stderr: false,
        keep_output: false,
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        let h = sb.exec(process(&["true"]), none);
        let status = sb.wait(&h);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status.code, Some(0), "true failed: {status:?}");
        if i >= 5 {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let p99 = times[((times.len() * 99) / 100).min(times.len() - 1)];

    let out_only = Stdio {
        stdin: false,
        stdout: true,
        stderr: false,
        keep_output: false,
    };
    let count = STDOUT_BYTES.to_string();
    let t = Instant::now();
    let mut h = sb.exec(process(&["head", "-c", &count, "/dev/zero"]), out_only);
    let mut stdout = h.take_stdout().expect("stdout stream");
    let got = sb.block_on("reading stdout", OP_DEADLINE, async {
        let mut got = 0u64;
        while let Some(chunk) = stdout.next_chunk().await? {
            got += chunk.len() as u64;
        }
        Ok::<u64, cocoon_runtime::agent::Error>(got)
    });
    let got = sb.check("reading stdout", got);
    let secs = t.elapsed().as_secs_f64();
    let status = sb.wait(&h);
    assert_eq!(status.code, Some(0), "head failed: {status:?}");
    assert_eq!(got, STDOUT_BYTES, "stdout came back short");
    let mibs = (got as f64 / (1 << 20) as f64) / secs;
    println!(r#"{{"p50_ms": {p50:.3}, "p99_ms": {p99:.3}, "n": {n}, "stdout_mibs": {mibs:.1}}}"#);
}
