//! cocoond and the cocoon CLI end to end: a real daemon on a temporary
//! state directory and socket, real sandboxes, and checks that nothing is
//! left behind (the daemon harness is `cocoon_tests::daemon`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_tests::daemon::{show, Daemon};
use cocoon_tests::hostnet::all_sandbox_links;

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
fn stop_sends_sigterm_then_kills_after_the_grace() {
    let d = Daemon::with_busybox(&[]);

    // An init that handles SIGTERM exits in its grace and keeps its code
    // and last words.
    let id = d.run_detached(&[
        "busybox",
        "--",
        "sh",
        "-c",
        "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    d.wait_for_log(&id, "ready");
    let start = Instant::now();
    assert_eq!(d.ok(&["stop", "-t", "60", &id]).trim(), id);
    let s = d.inspect(&id);
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["exit"]["exit_code"], 3, "{s}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the stop waited for the grace to end: {:?}",
        start.elapsed()
    );
    assert_eq!(d.ok(&["logs", &id]), "ready\nbye\n");
    d.ok(&["rm", &id]);

    // The workload is not PID 1 (the container's reaper is), so a plain
    // `sleep` dies of SIGTERM as it would on a host.
    let id = d
        .ok(&["run", "-d", "busybox", "--", "sleep", "600"])
        .trim()
        .to_string();
    d.ok(&["stop", &id]);
    let s = d.inspect(&id);
    assert_eq!(
        (&s["exit"]["exit_code"], &s["exit"]["signal"]),
        (&143.into(), &15.into()),
        "{s}"
    );
    d.ok(&["rm", &id]);

    // One that ignores SIGTERM is killed once the grace ends.
    let ignoring_term = || {
        let id = d.run_detached(&[
            "busybox",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ]);
        d.wait_for_log(&id, "ready");
        id
    };
    let id = ignoring_term();
    let start = Instant::now();
    d.ok(&["stop", "-t", "2", &id]);
    let took = start.elapsed();
    let s = d.inspect(&id);
    assert_eq!(s["state"], "stopped", "{s}");
    assert!(s["exit"].is_null(), "{s}");
    assert!(
        took >= Duration::from_secs(2),
        "stopped before the grace: {took:?}"
    );
    assert_eq!(d.vmm_pids().len(), 0, "the VMM outlived the stop");
    // A grace beyond the limit is refused.
    let out = d.cli(&["stop", "-t", "3601", &id]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    d.ok(&["rm", &id]);

    // A delete does not wait out a stop's long grace (`docker rm -f`).
    let id = ignoring_term();
    let mut stop = d
        .command(&["stop", "-t", "600", &id])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    d.ok(&["rm", "-f", &id]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "rm -f waited for the stop's grace: {:?}",
        start.elapsed()
    );
    let _ = stop.wait();

    // timeout_s stops the same way: an init that exits on SIGTERM keeps
    // its exit code, without waiting for the rest of the grace.
    let id = d.run_detached(&[
        "--timeout",
        "3",
        "busybox",
        "--",
        "sh",
        "-c",
        "trap 'echo term; exit 5' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    let start = Instant::now();
    let s = loop {
        let s = d.inspect(&id);
        if s["state"] != "running" {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["exit"]["exit_code"], 5, "{s}");
    assert_eq!(s["reason"], "timeout_s reached", "{s}");
    assert_eq!(d.ok(&["logs", &id]), "ready\nterm\n");
    d.ok(&["rm", &id]);
    d.assert_nothing_left();
}

/// The nice values of every thread of a process.
fn thread_nices(pid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Field 19; the fields after the command's ")" start at field 3.
        let nice = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(16));
        out.push(nice.and_then(|n| n.parse().ok()).unwrap_or(i64::MIN));
    }
    out
}

#[test]
fn warm_pool_boots_ahead_hands_out_and_leaves_nothing() {
    let mut d = Daemon::with_busybox(&["--warm-pool", "1"]);
    // The first create boots its own VM; then one of its shape is booted
    // ahead, in the background.
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "--", "echo", "cold"]),
        "cold\n"
    );
    d.wait_metric("cocoon_warm_pool_ready", 1.0);
    assert_eq!(d.metric("cocoon_warm_pool_misses_total"), 1.0);
    let warm: Vec<i32> = d.vmm_pids();
    assert_eq!(warm.len(), 1, "one warm VM");
    assert!(
        thread_nices(warm[0].into()).iter().all(|n| *n == 19),
        "a warm VM boots at the lowest priority: {:?}",
        thread_nices(warm[0].into())
    );

    // The next create of that shape takes it: a working sandbox with its
    // own name, at the normal priority.
    let id = d
        .ok(&["run", "-d", "busybox", "--", "sleep", "600"])
        .trim()
        .to_string();
    assert_eq!(d.metric("cocoon_warm_pool_hits_total"), 1.0);
    let pid = d.inspect(&id)["vmm"]["pid"].as_i64().unwrap();
    assert_eq!(pid, i64::from(warm[0]), "the sandbox runs in the warm VM");
    assert!(
        thread_nices(pid).iter().all(|n| *n == 0),
        "{:?}",
        thread_nices(pid)
    );
    assert_eq!(d.ok(&["exec", &id, "hostname"]), format!("{id}\n"));
    assert_eq!(
        d.ok(&["exec", &id, "sh", "-c", "echo data > /x && cat /x"]),
        "data\n"
    );
    d.wait_metric("cocoon_warm_pool_ready", 1.0);

    // Another shape boots its own VM, and the pool follows it.
    assert_eq!(
        d.ok(&["run", "--rm", "--memory", "320m", "busybox", "--", "echo", "other"]),
        "other\n"
    );
    assert_eq!(d.metric("cocoon_warm_pool_misses_total"), 2.0);
    d.wait_metric("cocoon_warm_pool_ready", 1.0);
    d.ok(&["rm", "-f", &id]);

    // A daemon that stops kills its warm VMs.
    d.stop();
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "warm VMs outlived cocoond");
    let warm_dir = d.state().join("warm");
    assert_eq!(std::fs::read_dir(&warm_dir).unwrap().count(), 0);

    // One killed with SIGKILL leaves them: the next start kills them.
    d.spawn();
    d.ok(&["run", "--rm", "busybox", "--", "true"]);
    d.wait_metric("cocoon_warm_pool_ready", 1.0);
    d.kill();
    assert_eq!(d.vmm_pids().len(), 1, "the warm VM of the killed daemon");
    d.spawn();
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "{}", d.log());
    assert_eq!(std::fs::read_dir(&warm_dir).unwrap().count(), 0);

    // Removing the image kills the warm VM that holds its disk.
    d.ok(&["run", "--rm", "busybox", "--", "true"]);
    d.wait_metric("cocoon_warm_pool_ready", 1.0);
    d.ok(&["rmi", "busybox"]);
    assert_eq!(d.metric("cocoon_warm_pool_ready"), 0.0);
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "{}", d.log());
    assert_eq!(std::fs::read_dir(&warm_dir).unwrap().count(), 0);
    d.assert_nothing_left();
}

#[test]
fn restarted_daemon_keeps_serving_running_sandboxes_and_fails_killed_ones() {
    let mut d = Daemon::with_busybox(&[]);
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

/// sha256 of a local file, by `sha256sum` (the same tool the guest uses).
fn local_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn files_go_in_and_out_with_cp_and_the_files_route() {
    let d = Daemon::with_busybox(&[]);
    let id = d.run_detached(&["busybox", "--", "sh", "-c", "echo started; exec sleep 600"]);
    let local = tempfile::tempdir().unwrap();
    let l = |p: &str| local.path().join(p);

    // A 3 MiB file with mode 0750, into an existing directory and to a new
    // name.
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(l("big.bin"), &data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(l("big.bin"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let want = local_sha256(&l("big.bin"));
    let big = l("big.bin").display().to_string();
    d.ok(&["cp", &big, &format!("{id}:/tmp")]);
    d.ok(&["cp", &big, &format!("{id}:/root/renamed.bin")]);
    for p in ["/tmp/big.bin", "/root/renamed.bin"] {
        let sum = d.ok(&["exec", &id, "sha256sum", p]);
        assert!(sum.starts_with(&want), "{p}: {sum} vs {want}");
        assert_eq!(d.ok(&["exec", &id, "stat", "-c", "%a", p]).trim(), "750");
    }

    // A directory tree with a symlink: into a directory, and as a new one.
    std::fs::create_dir_all(l("tree/sub")).unwrap();
    std::fs::write(l("tree/sub/file"), b"deep\n").unwrap();
    std::os::unix::fs::symlink("sub/file", l("tree/link")).unwrap();
    let tree = l("tree").display().to_string();
    d.ok(&["cp", &tree, &format!("{id}:/tmp")]);
    d.ok(&["cp", &tree, &format!("{id}:/tmp/copy")]);
    assert_eq!(
        d.ok(&["exec", &id, "cat", "/tmp/tree/sub/file", "/tmp/copy/link"]),
        "deep\ndeep\n"
    );
    assert_eq!(
        d.ok(&["exec", &id, "readlink", "/tmp/copy/link"]).trim(),
        "sub/file"
    );

    // Out again: a file to a new name, a tree into a directory.
    let out_file = l("back.bin").display().to_string();
    d.ok(&["cp", &format!("{id}:/root/renamed.bin"), &out_file]);
    assert_eq!(local_sha256(&l("back.bin")), want);
    std::fs::create_dir(l("out")).unwrap();
    let out_dir = l("out").display().to_string();
    d.ok(&["cp", &format!("{id}:/tmp/copy"), &out_dir]);
    assert_eq!(std::fs::read(l("out/copy/sub/file")).unwrap(), b"deep\n");
    assert_eq!(
        std::fs::read_link(l("out/copy/link")).unwrap(),
        PathBuf::from("sub/file")
    );
    d.ok(&["exec", &id, "sh", "-c", "echo guest-made > /tmp/g.txt"]);
    let g = l("g.txt").display().to_string();
    d.ok(&["cp", &format!("{id}:/tmp/g.txt"), &g]);
    assert_eq!(std::fs::read(l("g.txt")).unwrap(), b"guest-made\n");

    // Into a directory that does not exist: a clear error (the daemon reads
    // the refused body, so the CLI sees the answer).
    let out = d.cli(&["cp", &big, &format!("{id}:/no/such/dir/x")]);
    assert_eq!(out.status.code(), Some(125), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file"),
        "{}",
        show(&out)
    );

    // A path that does not exist: the CLI fails with the guest's message,
    // and the sandbox goes on.
    let out = d.cli(&["cp", &format!("{id}:/no/such"), &g]);
    assert_eq!(out.status.code(), Some(125), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read(l("g.txt")).unwrap(), b"guest-made\n");

    // The init's output is in its logs; delete leaves nothing.
    assert_eq!(d.ok(&["logs", &id]), "started\n");
    d.ok(&["rm", "-f", &id]);
    d.assert_nothing_left();
}

/// An OCI layout of image `digest` from a state directory's blobs.
fn export_layout(state: &Path, digest: &str, dir: &Path) {
    let hex = digest.trim_start_matches("sha256:");
    let blobs = state.join("images/blobs");
    let manifest = std::fs::read(blobs.join("sha256").join(hex)).unwrap();
    let media: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let out = Command::new("cp")
        .arg("-r")
        .arg(&blobs)
        .arg(dir.join("blobs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cp blobs: {}", show(&out));
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media["mediaType"],
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn pull_from_a_registry_then_run_the_image() {
    // Push the built-in busybox image to a local registry (Debian's
    // docker-registry on 127.0.0.1) with skopeo.
    let reg_dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::create_dir(reg_dir.path().join("storage")).unwrap();
    let config = reg_dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cocoon-test-only\n",
            reg_dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (Debian package docker-registry) is needed");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _registry = Kill(&mut registry);
    let host = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(&host).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "registry not listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let d = Daemon::start_with(&["--insecure-registry", &host]);
    let digest = d
        .ok(&["import", "--builtin", "busybox"])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let layout = tempfile::tempdir().unwrap();
    export_layout(&d.state(), &digest, layout.path());
    let push = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:latest", layout.path().display()))
        .arg(format!("docker://{host}/tools/bb:1"))
        .output()
        .expect("skopeo (Debian package skopeo) is needed");
    assert!(push.status.success(), "skopeo: {}", show(&push));
    d.ok(&["rmi", "busybox:latest"]);

    // The pull shows each layer and the digest; the image then runs.
    let reference = format!("{host}/tools/bb:1");
    let out = d.ok(&["pull", &reference]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert!(d.ok(&["images"]).contains(&reference));
    let out = d.ok(&["pull", &reference]);
    assert!(
        out.contains("Already exists") && out.contains("up to date"),
        "{out}"
    );
    let out = d.cli(&[
        "run",
        "--rm",
        &reference,
        "--",
        "sh",
        "-c",
        "echo pulled-and-running",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), d.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled-and-running\n");

    // Unknown images and unreachable registries are one-line errors.
    let out = d.cli(&["pull", &format!("{host}/tools/nope:1")]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown image"),
        "{}",
        show(&out)
    );
    d.assert_nothing_left();
}

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn twenty_concurrent_creates_all_run_and_delete_cleanly() {
    // Twenty guests booting at once share the test machine's one vCPU.
    let d = Daemon::with_busybox(&["--boot-timeout", "600"]);
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    d.ok(&[
                        "run", "-d", "--memory", "128m", "busybox", "--", "sleep", "600",
                    ])
                    .trim()
                    .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "{ids:?}");
    assert_eq!(d.vmm_pids().len(), 20);
    // Each is its own VM: its hostname is its own id.
    for id in &ids {
        assert_eq!(d.inspect(id)["state"], "running");
        assert_eq!(d.ok(&["exec", id, "hostname"]).trim(), id);
    }
    std::thread::scope(|s| {
        for id in &ids {
            let d = &d;
            s.spawn(move || d.ok(&["rm", "-f", id]));
        }
    });
    d.assert_nothing_left();
}

#[test]
fn two_hundred_create_delete_cycles_leak_nothing() {
    let d = Daemon::with_busybox(&[]);
    let daemon_pid = d.pid();
    // Every other sandbox is networked (namespace, veth, TAP, address).
    let cycle = |i: usize| {
        let network = if i.is_multiple_of(2) {
            "default"
        } else {
            "none"
        };
        let code = (i % 7).to_string();
        let out = d.cli(&[
            "run",
            "--rm",
            "--network",
            network,
            "busybox",
            "--",
            "sh",
            "-c",
            "exit $0",
            &code,
        ]);
        assert_eq!(
            out.status.code(),
            Some((i % 7) as i32),
            "cycle {i}: {}\n{}",
            show(&out),
            d.log()
        );
    };
    // Warm-up: the root disk is built, the daemon's pools fill.
    for i in 0..5 {
        cycle(i);
    }
    let fds_before = fd_count(daemon_pid);
    for i in 5..200 {
        cycle(i);
    }
    d.assert_nothing_left();
    assert_eq!(
        mounts_under(&d.state()),
        Vec::<String>::new(),
        "mounts remain"
    );
    assert_eq!(
        all_sandbox_links(),
        Vec::<String>::new(),
        "network namespaces or sandbox interfaces remain"
    );
    let fds_after = fd_count(daemon_pid);
    assert!(
        fds_after <= fds_before + 2,
        "cocoond's descriptors grew from {fds_before} to {fds_after}"
    );
}

/// The numbers of the `lineN` lines in `text`.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn init_output_survives_a_daemon_restart() {
    let mut d = Daemon::with_busybox(&[]);
    // Prints a numbered line five times a second; a write into a closed
    // pipe would kill it (SIGPIPE) or end the loop (EPIPE).
    let script = "i=0; while echo line$i; do i=$((i+1)); sleep 0.2; done; echo broken >&2";
    let id = d
        .ok(&["run", "-d", "busybox", "--", "sh", "-c", script])
        .trim()
        .to_string();
    let wait_for = |d: &Daemon, n: u64| {
        let start = Instant::now();
        loop {
            let logs = d.ok(&["logs", &id]);
            if line_numbers(&logs).last().is_some_and(|l| *l >= n) {
                return logs;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no line{n}: {logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Waits for `more` lines past the last one so far; every line from
    // line0 on must be there once.
    let continues = |d: &Daemon, last: u64, more: u64, across: &str| {
        let logs = wait_for(d, last + more);
        let numbers = line_numbers(&logs);
        let want: Vec<u64> = (0..=*numbers.last().unwrap()).collect();
        assert_eq!(
            numbers, want,
            "lines lost or repeated across {across}\n{logs}"
        );
        assert!(!logs.contains("broken"), "{logs}");
        *numbers.last().unwrap()
    };
    let last = *line_numbers(&wait_for(&d, 3)).last().unwrap();
    d.stop();
    // Output written while no daemon is connected is kept by the agent.
    std::thread::sleep(Duration::from_secs(3));
    d.spawn();
    let last = continues(&d, last, 20, "the restart");
    // A daemon killed outright loses what it had received but not yet
    // written; the agent sends it again from the log's byte count.
    d.kill();
    std::thread::sleep(Duration::from_secs(1));
    d.spawn();
    continues(&d, last, 10, "a SIGKILL");
    assert_eq!(d.inspect(&id)["state"], "running");
    d.ok(&["rm", "-f", &id]);
    d.assert_nothing_left();
}
