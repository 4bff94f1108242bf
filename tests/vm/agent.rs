//! The guest agent end to end: a real VM booted from the agent initramfs
//! with the busybox image as its root disk, driven through `AgentClient`
//! over vsock. Each test boots its own sandbox (tests/src/sandbox.rs), so
//! one that breaks the guest cannot fail the others.

use std::time::{Duration, Instant};

use cocoon_proto::{ConsoleSize, ErrorCode, Rlimit, User};
use cocoon_runtime::agent::{Error, Stdio, CHUNK};
use cocoon_tests::sandbox::{
    collect, fill_pattern, hex, pattern, process, sha256_hex, Sandbox, CONTAINER, OP_DEADLINE,
    PATH_ENV,
};
use sha2::{Digest as _, Sha256};

const MIB: usize = 1 << 20;

/// No stdio at all: the process's stdin, stdout and stderr are /dev/null.
const NO_STDIO: Stdio = Stdio {
    stdin: false,
    stdout: false,
    stderr: false,
    keep_output: false,
};

#[test]
fn exec_returns_stdout_and_exit_code() {
    let sb = Sandbox::boot_default();
    let out = sb.run(&["sh", "-c", "echo hi; exit 3"]);
    assert_eq!(out.stdout, "hi\n", "{out:?}\n{}", sb.diagnostics());
    assert_eq!(out.stderr, "", "{out:?}");
    assert_eq!(out.status.code, Some(3), "{out:?}");
    assert_eq!(out.status.signal, None, "{out:?}");
}

#[test]
fn process_killed_by_sigkill_reports_the_signal() {
    let sb = Sandbox::boot_default();
    let h = sb.exec(process(&["sleep", "1000"]), NO_STDIO);
    sb.ok("signal 9", h.signal(9));
    let status = sb.wait(&h);
    assert_eq!(status.signal, Some(9), "{status:?}");
    assert_eq!(status.code, None, "{status:?}");
}

#[test]
fn cat_streams_64_mib_stdin_to_stdout_checksummed() {
    const TOTAL: usize = 64 * MIB;
    let sb = Sandbox::boot_default();
    let mut h = sb.exec(process(&["cat"]), Stdio::all());
    let mut stdin = h.take_stdin().unwrap();
    let mut stdout = h.take_stdout().unwrap();
    let mut stderr = h.take_stderr().unwrap();
    let send = async move {
        let mut sum = Sha256::new();
        let mut state = 0x5eed_u64;
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0;
        while sent < TOTAL {
            fill_pattern(&mut state, &mut buf);
            sum.update(&buf);
            stdin.write_all(&buf).await?;
            sent += buf.len();
        }
        stdin.close()?;
        Ok::<_, Error>((sent, hex(&sum.finalize())))
    };
    let recv = async move {
        let mut sum = Sha256::new();
        let mut got = 0;
        while let Some(b) = stdout.next_chunk().await? {
            sum.update(&b);
            got += b.len();
        }
        Ok::<_, Error>((got, hex(&sum.finalize())))
    };
    let (sent, received, err, status) = sb.block_on(
        "streaming 64 MiB through cat",
        Duration::from_secs(600),
        async { tokio::join!(send, recv, stderr.read_all(), h.wait()) },
    );
    let (sent, sent_sum) = sb.check("writing stdin", sent);
    let (got, got_sum) = sb.check("reading stdout", received);
    let err = sb.check("reading stderr", err);
    let status = sb.check("wait", status);
    assert_eq!(sent, TOTAL);
    assert_eq!(got, TOTAL, "cat returned {got} of {TOTAL} bytes");
    assert_eq!(got_sum, sent_sum, "stdout differs from stdin");
    assert!(err.is_empty(), "stderr: {}", String::from_utf8_lossy(&err));
    assert_eq!(status.code, Some(0), "{status:?}");
}

#[test]
fn stderr_is_kept_apart_from_stdout() {
    let sb = Sandbox::boot_default();
    // Both streams busy at once, in large enough volume to need credit.
    let out = sb.run(&[
        "sh",
        "-c",
        "echo out; echo err >&2; seq 1 50000 & seq 50001 100000 >&2; wait",
    ]);
    let want_out: String = std::iter::once("out".to_string())
        .chain((1..=50000).map(|i| i.to_string()))
        .map(|l| l + "\n")
        .collect();
    let want_err: String = std::iter::once("err".to_string())
        .chain((50001..=100000).map(|i| i.to_string()))
        .map(|l| l + "\n")
        .collect();
    assert_eq!(out.status.code, Some(0), "{:?}", out.status);
    assert!(
        out.stdout == want_out,
        "stdout is not `out` then 1..=50000 ({} bytes, starts {:?})",
        out.stdout.len(),
        &out.stdout[..out.stdout.len().min(80)]
    );
    assert!(
        out.stderr == want_err,
        "stderr is not `err` then 50001..=100000 ({} bytes, starts {:?})",
        out.stderr.len(),
        &out.stderr[..out.stderr.len().min(80)]
    );
}

#[test]
fn env_cwd_uid_gid_and_rlimit_are_applied() {
    let sb = Sandbox::boot_default();
    let mut p = process(&[
        "sh",
        "-c",
        "env; echo cwd=$(pwd); echo uid=$(id -u); echo gid=$(id -g); \
         echo groups=$(id -G); echo nofile=$(ulimit -n); echo nofile_hard=$(ulimit -Hn)",
    ]);
    p.env = vec![PATH_ENV.into(), "COCOON_GREETING=hello world".into()];
    p.cwd = "/tmp".into();
    p.user = User {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![2000, 2001],
    };
    p.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 123,
        hard: 456,
    }];
    let out = sb.run_process(p);
    assert_eq!(out.status.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "COCOON_GREETING=hello world",
        PATH_ENV,
        "cwd=/tmp",
        "uid=1000",
        "gid=1001",
        "nofile=123",
        "nofile_hard=456",
    ] {
        assert!(lines.contains(&want), "no line {want:?} in\n{}", out.stdout);
    }
    let groups = lines
        .iter()
        .find_map(|l| l.strip_prefix("groups="))
        .unwrap_or_else(|| panic!("no groups line in\n{}", out.stdout));
    let mut groups: Vec<&str> = groups.split_whitespace().collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups, ["1001", "2000", "2001"], "{}", out.stdout);
}

#[test]
fn terminal_process_gets_a_pty_and_sees_resize() {
    let sb = Sandbox::boot_default();
    let mut p = process(&["sh", "-c", "tty; stty size; read line; stty size"]);
    p.terminal = true;
    p.console_size = Some(ConsoleSize { rows: 24, cols: 80 });
    let mut h = sb.exec(
        p,
        Stdio {
            stdin: true,
            stdout: true,
            stderr: false,
            keep_output: false,
        },
    );
    let mut pty = h.take_stdout().unwrap();
    let mut text = String::new();
    // Until the first `stty size` answer: the initial size is in place.
    sb.block_on("reading tty and the first stty size", OP_DEADLINE, async {
        while !text.lines().any(|l| l.trim() == "24 80") {
            match sb.check("reading the pty", pty.next_chunk().await) {
                Some(b) => text.push_str(&String::from_utf8_lossy(&b)),
                None => panic!("pty closed early; output so far {text:?}"),
            }
        }
    });
    let tty = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('/'))
        .unwrap_or_else(|| panic!("no tty path in {text:?}"));
    assert!(tty.starts_with("/dev/pts/"), "tty printed {tty:?}");
    sb.ok("resize", h.resize(50, 132));
    sb.ok("write a line to the pty", h.write_stdin(b"go\n"));
    let rest = sb.ok("reading the rest of the pty", pty.read_all());
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.lines().any(|l| l.trim() == "50 132"),
        "stty size after resize printed {rest:?} (before: {text:?})"
    );
    let status = sb.wait(&h);
    assert_eq!(status.code, Some(0), "{status:?}");
}

#[test]
fn exec_into_running_container() {
    let sb = Sandbox::boot_default();
    let main = sb.exec(
        process(&["sh", "-c", "echo ready > /tmp/ready; exec sleep 1000"]),
        NO_STDIO,
    );
    // The second process sees the first one's files and the process itself.
    let start = Instant::now();
    let seen = loop {
        // grep, not cat: the file exists (empty) before `echo` has written
        // to it, and an empty read must count as not ready yet.
        let out = sb.run(&["sh", "-c", "grep -x ready /tmp/ready && pidof sleep"]);
        if out.status.code == Some(0) {
            break out;
        }
        assert!(
            start.elapsed() < OP_DEADLINE,
            "the first process never became visible: {out:?}\n{}",
            sb.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut lines = seen.stdout.lines();
    assert_eq!(lines.next(), Some("ready"), "{seen:?}");
    assert!(
        lines.next().is_some_and(|l| !l.trim().is_empty()),
        "pidof sleep found nothing: {seen:?}"
    );
    assert!(
        sb.vmm_exited().is_none(),
        "VMM exited\n{}",
        sb.diagnostics()
    );
    sb.ok("signal 15", main.signal(15));
    let status = sb.wait(&main);
    assert_eq!(status.signal, Some(15), "{status:?}");
}

#[test]
fn fifty_concurrent_execs_return_correct_output() {
    let sb = Sandbox::boot_default();
    let results = sb.block_on("50 concurrent execs", Duration::from_secs(300), async {
        let mut set = tokio::task::JoinSet::new();
        for n in 0..50u32 {
            let client = sb.client().clone();
            let exec_id = format!("echo-{n}");
            set.spawn(async move {
                let out = collect(
                    &client,
                    CONTAINER,
                    &exec_id,
                    process(&["echo", &n.to_string()]),
                )
                .await;
                (n, out)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = set.join_next().await {
            results.push(r.unwrap());
        }
        results
    });
    assert_eq!(results.len(), 50);
    for (n, out) in results {
        let out = sb.check(&format!("exec {n}"), out);
        assert_eq!(out.stdout, format!("{n}\n"), "exec {n}: {out:?}");
        assert_eq!(out.status.code, Some(0), "exec {n}: {out:?}");
    }
}

#[test]
fn missing_executable_is_a_clear_error() {
    let sb = Sandbox::boot_default();
    for path in ["/no/such/binary", "no-such-command"] {
        let r = sb.block_on(
            "exec of a missing executable",
            OP_DEADLINE,
            sb.client()
                .exec(CONTAINER, &sb.next_exec_id(), process(&[path]), NO_STDIO),
        );
        match r {
            Err(Error::Agent(body))
                if body.code == ErrorCode::ExecutableNotFound || body.message.contains(path) => {}
            Err(e) => panic!("exec {path}: error does not say what is missing: {e}"),
            Ok(h) => {
                let status = sb.wait(&h);
                panic!("exec {path} started (pid {}), then {status:?}", h.pid())
            }
        }
    }
    // The failed execs left the agent serving.
    assert_eq!(sb.run(&["echo", "ok"]).stdout, "ok\n");
}

#[test]
fn container_cannot_kill_the_agent() {
    let sb = Sandbox::boot_default();
    let victim = sb.exec(process(&["sleep", "1000"]), NO_STDIO);
    let out = sb.run(&["sh", "-c", "kill -9 -1; echo survived"]);
    assert_eq!(out.stdout, "survived\n", "{out:?}\n{}", sb.diagnostics());
    // Everything else in the container went, and the agent says so.
    let status = sb.wait(&victim);
    assert_eq!(status.signal, Some(9), "{status:?}");
    assert!(
        sb.client().is_connected(),
        "connection lost\n{}",
        sb.diagnostics()
    );
    assert_eq!(
        sb.run(&["echo", "still", "serving"]).stdout,
        "still serving\n"
    );
    assert!(
        sb.vmm_exited().is_none(),
        "VMM exited\n{}",
        sb.diagnostics()
    );
}

#[test]
fn fork_bomb_leaves_the_agent_serving() {
    // A real, unbounded fork bomb: the container's cgroup limits (pids and
    // memory) must keep it from starving the agent, which has to start a
    // process, answer stats and power the VM off while the bomb churns.
    let sb = Sandbox::boot_default();
    let _bomb = sb.exec(process(&["sh", "-c", "f() { f | f & }; f"]), NO_STDIO);
    let start = Instant::now();
    let mut stats = sb.ok("stats", sb.client().stats(CONTAINER));
    while stats.pids < 200 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        stats = sb.ok("stats", sb.client().stats(CONTAINER));
    }
    eprintln!("fork bomb after {:?}: {stats:?}", start.elapsed());
    assert!(stats.pids >= 200, "the bomb did not go off: {stats:?}");
    let started = Instant::now();
    let alive = sb.block_on(
        "an exec next to a fork bomb",
        OP_DEADLINE,
        collect(sb.client(), CONTAINER, "alive", process(&["echo", "alive"])),
    );
    let alive = sb.check("exec next to a fork bomb", alive);
    eprintln!("exec next to a fork bomb took {:?}", started.elapsed());
    assert_eq!(alive.stdout, "alive\n", "{alive:?}");
    sb.ok("shutdown during a fork bomb", sb.client().shutdown());
    let status = sb.wait_vmm_exit(OP_DEADLINE);
    assert_eq!(status.code(), Some(0), "VMM {status}\n{}", sb.diagnostics());
}

#[test]
fn files_copy_in_and_out_round_trip() {
    let sb = Sandbox::boot_default();
    let data = pattern(7, MIB);
    let sent = sb.ok(
        "copy_in",
        sb.client()
            .copy_in(CONTAINER, "/tmp/in.bin", false, 0o640, &data[..]),
    );
    assert_eq!(sent, MIB as u64);
    let out = sb.run(&["sh", "-c", "sha256sum /tmp/in.bin; stat -c %a /tmp/in.bin"]);
    let mut lines = out.stdout.lines();
    let sum = lines.next().and_then(|l| l.split_whitespace().next());
    assert_eq!(sum, Some(sha256_hex(&data).as_str()), "{out:?}");
    assert_eq!(lines.next(), Some("640"), "{out:?}");
    let back = sb.block_on("copy_out", OP_DEADLINE, async {
        let mut s = sb
            .client()
            .copy_out(CONTAINER, "/tmp/in.bin", false)
            .await?;
        s.read_all().await
    });
    let back = sb.check("copy_out", back);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "copy_out returned different bytes");
    // A missing file is an error, not a hang or an empty file.
    let missing = sb.block_on("copy_out of a missing file", OP_DEADLINE, async {
        let mut s = sb
            .client()
            .copy_out(CONTAINER, "/no/such/file", false)
            .await?;
        s.read_all().await
    });
    assert!(
        matches!(missing, Err(Error::Agent(_))),
        "copy_out of a missing file: {missing:?}"
    );
}

#[test]
fn root_is_the_image_with_a_writable_scratch_layer() {
    let sb = Sandbox::boot_default();
    let image_before = sha256_hex(&std::fs::read(sb.root_disk()).unwrap());
    assert_eq!(sb.run(&["ls", "/bin/busybox"]).stdout, "/bin/busybox\n");
    let out = sb.run(&["sh", "-c", "echo written > /etc/x && cat /etc/x"]);
    assert_eq!(out.stdout, "written\n", "{out:?}");
    let again = sb.run(&["cat", "/etc/x"]);
    assert_eq!(again.stdout, "written\n", "{again:?}");
    let fstype = sb.run(&[
        "awk",
        "$2 == \"/\" { t = $3 } END { print t }",
        "/proc/mounts",
    ]);
    assert_eq!(fstype.stdout, "overlay\n", "root file system: {fstype:?}");
    sb.ok("shutdown", sb.client().shutdown());
    sb.wait_vmm_exit(OP_DEADLINE);
    let image_after = sha256_hex(&std::fs::read(sb.root_disk()).unwrap());
    assert_eq!(image_before, image_after, "the image disk changed");
    // The write landed in the scratch disk's overlay upper layer.
    let debugfs = std::process::Command::new("debugfs")
        .args(["-R", "cat /upper/etc/x"])
        .arg(sb.scratch_disk())
        .output()
        .unwrap_or_else(|e| panic!("debugfs (package e2fsprogs): {e}"));
    assert_eq!(
        String::from_utf8_lossy(&debugfs.stdout),
        "written\n",
        "the scratch disk's /upper/etc/x: {debugfs:?}"
    );
}

#[test]
fn stats_report_memory_and_pids() {
    let sb = Sandbox::boot_default();
    let _sleepers = sb.exec(
        process(&["sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000 & wait"]),
        NO_STDIO,
    );
    let start = Instant::now();
    let stats = loop {
        let s = sb.ok("stats", sb.client().stats(CONTAINER));
        if s.pids >= 4 {
            break s;
        }
        assert!(
            start.elapsed() < OP_DEADLINE,
            "stats never showed the 4 processes: {s:?}\n{}",
            sb.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(stats.memory_bytes > 0, "{stats:?}");
    if let Some(max) = stats.memory_max_bytes {
        assert!(max >= stats.memory_bytes, "{stats:?}");
    }
}

#[test]
fn shutdown_powers_off_the_vm() {
    let sb = Sandbox::boot_default();
    assert_eq!(sb.run(&["true"]).status.code, Some(0));
    sb.ok("shutdown", sb.client().shutdown());
    let status = sb.wait_vmm_exit(OP_DEADLINE);
    assert_eq!(status.code(), Some(0), "VMM {status}\n{}", sb.diagnostics());
}

#[test]
fn sigterm_reaches_sleep() {
    let sb = Sandbox::boot_default();
    let h = sb.exec(process(&["sleep", "1000"]), NO_STDIO);
    sb.ok("signal 15", h.signal(15));
    let status = sb.wait(&h);
    assert_eq!(status.signal, Some(15), "{status:?}");
}

#[test]
fn the_agent_refuses_a_newer_protocol_version() {
    use cocoon_proto::{read_frame, write_frame, Frame, Hello};
    use std::io::{BufRead, BufReader, Write};
    let sb = Sandbox::boot_default();
    let mut s = std::os::unix::net::UnixStream::connect(sb.vsock_socket()).unwrap();
    s.set_read_timeout(Some(OP_DEADLINE)).unwrap();
    s.write_all(b"CONNECT 1024\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("OK "), "{line:?}");
    let future = Hello {
        version: 99,
        min_version: 99,
        agent: Some("a host from the future".into()),
    };
    write_frame(&mut s, &Frame::Hello(future)).unwrap();
    match read_frame(&mut r) {
        Ok(Some(Frame::Error(e))) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion, "{e:?}");
            assert!(
                e.message.contains("99"),
                "the error names the versions: {e:?}"
            );
        }
        other => panic!("expected an UnsupportedVersion error frame, got {other:?}"),
    }
    // The agent keeps serving others.
    assert_eq!(sb.run(&["echo", "ok"]).stdout, "ok\n");
}

#[test]
fn tar_streams_copy_directories_in_and_out() {
    let sb = Sandbox::boot_default();
    let mut b = tar::Builder::new(Vec::new());
    let data = pattern(11, 300_000);
    for (path, body, mode) in [
        ("d/a.bin", &data[..], 0o600),
        ("d/sub/b.txt", b"hello\n".as_slice(), 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        b.append_data(&mut h, path, body).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_link(&mut h, "d/link", "sub/b.txt").unwrap();
    let archive = b.into_inner().unwrap();
    sb.ok(
        "copy_in tar",
        sb.client()
            .copy_in(CONTAINER, "/tmp", true, 0, &archive[..]),
    );
    let out = sb.run(&[
        "sh",
        "-c",
        "sha256sum /tmp/d/a.bin; stat -c '%a %u %g' /tmp/d/a.bin; cat /tmp/d/link; readlink /tmp/d/link",
    ]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first().and_then(|l| l.split_whitespace().next()),
        Some(sha256_hex(&data).as_str()),
        "{out:?}"
    );
    assert_eq!(
        &lines[1..],
        ["600 1234 5678", "hello", "sub/b.txt"],
        "{out:?}"
    );
    let back = sb.block_on("copy_out tar", OP_DEADLINE, async {
        let mut s = sb.client().copy_out(CONTAINER, "/tmp/d", true).await?;
        s.read_all().await
    });
    let back = sb.check("copy_out tar", back);
    let mut names = Vec::new();
    let mut got_data = None;
    for e in tar::Archive::new(&back[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if name == "d/a.bin" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            got_data = Some(v);
        }
        if name == "d/link" {
            assert_eq!(
                e.link_name().unwrap().unwrap().to_string_lossy(),
                "sub/b.txt"
            );
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["d", "d/a.bin", "d/link", "d/sub", "d/sub/b.txt"]);
    assert!(got_data == Some(data), "d/a.bin came back different");
    // A tar stream into a path that does not exist is an error.
    let r = sb.block_on(
        "copy_in tar to a missing dir",
        OP_DEADLINE,
        sb.client()
            .copy_in(CONTAINER, "/no/such/dir", true, 0, &archive[..]),
    );
    assert!(matches!(r, Err(Error::Agent(_))), "{r:?}");
}

#[test]
fn hostname_hosts_and_resolv_conf_are_in_place() {
    let sb = Sandbox::boot_default();
    let out = sb.run(&["sh", "-c", "hostname; cat /etc/hostname; grep -c localhost /etc/hosts; test -f /etc/resolv.conf && echo resolv; ls /bin | grep -c ."]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..4], [CONTAINER, CONTAINER, "2", "resolv"], "{out:?}");
    // The image's files are there: busybox and its applet links.
    let applets: usize = lines[4].parse().unwrap();
    assert!(applets > 50, "only {applets} entries in /bin: {out:?}");
}
