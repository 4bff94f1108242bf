//! cocoond and the cocoon CLI end to end: a real daemon on a temporary
//! state directory and socket, real sandboxes, and checks that nothing is
//! left behind (the daemon harness is `cocoon_tests::daemon`).

use std::time::{Duration, Instant};

use cocoon_tests::daemon::{show, Daemon};

#[test]
fn cli_run_rm_prints_output_returns_exit_code_and_leaves_nothing() {
    let d = Daemon::start();
    let imported = d.ok(&["import", "--builtin", "busybox"]);
    assert!(imported.contains("busybox:latest"), "{imported}");
    assert!(d.ok(&["images"]).contains("busybox:latest"));

    let out = d.cli(&[
        "run",
        "--rm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n--- cocoond log\n{}",
        show(&out),
        d.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "{}",
        show(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "oops\n",
        "{}",
        show(&out)
    );
    d.assert_nothing_left();

    // A program that does not exist: 127, and --rm still cleans up.
    let out = d.cli(&["run", "--rm", "busybox", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    d.assert_nothing_left();
}

#[test]
fn restarted_daemon_keeps_serving_running_sandboxes_and_fails_killed_ones() {
    let mut d = Daemon::start();
    d.ok(&["import", "--builtin", "busybox"]);
    let id = d
        .ok(&[
            "run", "-d", "--memory", "256m", "busybox", "--", "sleep", "600",
        ])
        .trim()
        .to_string();
    assert_eq!(d.ok(&["exec", &id, "echo", "before"]), "before\n");
    let out = d.cli(&["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));

    // The VM outlives the daemon, and the new daemon takes it over.
    d.stop();
    assert_eq!(d.vmm_pids().len(), 1, "the VMM did not survive the daemon");
    d.spawn();
    assert_eq!(d.inspect(&id)["state"], "running", "{}", d.log());
    assert_eq!(d.ok(&["exec", &id, "echo", "after"]), "after\n");

    // A VMM killed behind the daemon's back: the sandbox fails, its files go.
    let pid = d.inspect(&id)["vmm"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the VMM's pid, read from the daemon just now.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = Instant::now();
    loop {
        let s = d.inspect(&id);
        if s["state"] == "failed" {
            assert!(s["reason"].as_str().unwrap().contains("VMM"), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still {s}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = d.state().join("sandboxes").join(&id);
    assert!(!dir.join("scratch.ext4").exists());
    assert!(!dir.join("vsock.sock").exists());
    d.ok(&["rm", &id]);
    d.assert_nothing_left();
}
