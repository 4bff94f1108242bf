//! Interactive use through the real CLI and daemon: `cocoon run -it` in a
//! pseudo terminal (typing commands, reading their output, the terminal's
//! size following the window's), `exec -i` with piped stdin, signals
//! forwarded by a non-tty `exec`, and `logs -f` showing lines as they are
//! written.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use cocoon_tests::daemon::{show, Daemon};

/// Longest wait for a piece of output (a `run` boots a VM first).
const OUTPUT_DEADLINE: Duration = Duration::from_secs(240);

/// A CLI process whose stdin, stdout and stderr are a pseudo terminal
/// (its controlling terminal), as in a person's shell.
struct PtyChild {
    child: Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyChild {
    fn spawn(mut cmd: std::process::Command, rows: u16, cols: u16) -> PtyChild {
        let (mut master, mut slave) = (0, 0);
        let ws = winsize(rows, cols);
        // SAFETY: openpty writes two descriptors into the given ints; the
        // name and termios pointers may be null, the winsize is read.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors from openpty, owned from here on.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(io(&slave)).stdout(io(&slave)).stderr(io(&slave));
        // SAFETY: between fork and exec only async-signal-safe calls:
        // setsid and ioctl, making the pty (fd 0) the controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        drop(slave);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the slave has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        PtyChild {
            child,
            master,
            screen,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the output since `from` contains `needle`; returns the
    /// screen's length after it.
    fn wait_for(&mut self, from: usize, needle: &str, d: &Daemon) -> usize {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if let Some(i) = screen.get(from..).and_then(|s| s.find(needle)) {
                return from + i + needle.len();
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "the CLI exited ({s}) before {needle:?} appeared\n--- screen\n{screen}\n--- cocoond log\n{}",
                    d.log()
                );
            }
            assert!(
                start.elapsed() < OUTPUT_DEADLINE,
                "{needle:?} did not appear\n--- screen\n{screen}\n--- cocoond log\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_line(&mut self, line: &str) {
        // Enter on a terminal is a carriage return.
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Changes the window size: the kernel sends the CLI SIGWINCH.
    fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self, d: &Daemon) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s
                    .code()
                    .unwrap_or_else(|| panic!("the CLI was killed: {s}"));
            }
            assert!(
                start.elapsed() < OUTPUT_DEADLINE,
                "the CLI did not exit\n--- screen\n{}\n--- cocoond log\n{}",
                self.screen(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The terminal's settings, as the pty test left them, must be back to
/// what they were: the CLI restores its terminal on the way out.
fn termios_of(f: &File) -> libc::termios {
    // SAFETY: an all-zero termios is a valid value to be overwritten.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr fills the termios we own.
    let r = unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) };
    assert_eq!(r, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    t
}

#[test]
fn run_it_gives_a_working_shell_whose_exit_code_is_the_clis() {
    let d = Daemon::with_busybox(&[]);
    let mut pty = PtyChild::spawn(d.command(&["run", "--rm", "-it", "busybox", "sh"]), 40, 120);
    let before = termios_of(&pty.master);
    // The prompt (after the VM booted), then a command and its answer.
    let mut at = pty.wait_for(0, "# ", &d);
    pty.type_line("echo $((6*7))");
    at = pty.wait_for(at, "\n42\r\n", &d);
    // The terminal has the window's size, and follows it when it changes.
    pty.type_line("stty size");
    at = pty.wait_for(at, "\n40 120\r\n", &d);
    pty.resize(50, 132);
    // SIGWINCH reaches the CLI asynchronously: ask until it shows.
    let start = Instant::now();
    loop {
        pty.type_line("stty size");
        let seen = pty.wait_for(at, "stty size", &d);
        std::thread::sleep(Duration::from_millis(500));
        if pty.screen()[seen..].contains("\n50 132\r\n") {
            at = seen;
            break;
        }
        at = seen;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the size did not follow the window\n{}",
            pty.screen()
        );
    }
    // Ctrl-C is a byte for the guest's terminal: it interrupts the
    // foreground command, not the CLI.
    pty.type_line("sleep 100");
    std::thread::sleep(Duration::from_millis(500));
    pty.master.write_all(b"\x03").unwrap();
    pty.type_line("echo still $((1+1))");
    at = pty.wait_for(at, "\nstill 2\r\n", &d);
    let _ = at;
    pty.type_line("exit 5");
    assert_eq!(pty.wait_exit(&d), 5, "{}", pty.screen());
    let after = termios_of(&pty.master);
    assert_eq!(
        (before.c_lflag, before.c_iflag, before.c_oflag),
        (after.c_lflag, after.c_iflag, after.c_oflag),
        "the CLI left the terminal changed"
    );
    d.assert_nothing_left();
}

#[test]
fn exec_streams_stdin_and_forwards_signals() {
    let d = Daemon::with_busybox(&[]);
    let id = d
        .ok(&["run", "-d", "busybox", "--", "sleep", "600"])
        .trim()
        .to_string();

    // 4 MiB through `cat` and back, byte for byte.
    let mut data = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sent = Sha256::digest(&data);
    let mut child = d
        .command(&["exec", "-i", &id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
        // Dropping stdin: end of file, which closes cat's stdin.
    });
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{}\n{}", show(&out), d.log());
    assert_eq!(
        out.stdout.len(),
        4 << 20,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        Sha256::digest(&out.stdout),
        sent,
        "the bytes came back changed"
    );
    eprintln!("exec -i cat: 4 MiB echoed in {:?}", started.elapsed());

    // SIGTERM to a non-tty exec goes to the process, whose exit is the CLI's.
    let mut child = d
        .command(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready", "{}", d.log());
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got TERM", "{}", d.log());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{status}\n{}", d.log());

    // A terminal from exec: the size given is the one the process sees.
    let mut pty = PtyChild::spawn(d.command(&["exec", "-t", &id, "stty", "size"]), 33, 99);
    pty.wait_for(0, "33 99", &d);
    assert_eq!(pty.wait_exit(&d), 0);

    d.ok(&["rm", "-f", &id]);
    d.assert_nothing_left();
}

#[test]
fn logs_follow_shows_lines_as_they_come_and_ends_with_the_sandbox() {
    let d = Daemon::with_busybox(&[]);
    let id = d.run_detached(&[
        "busybox",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; echo warn $i >&2; sleep 1; done",
    ]);
    let started = Instant::now();
    let mut child = d
        .command(&["logs", "-f", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(err).read_to_string(&mut s);
        s
    });
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        seen.push((line.unwrap(), started.elapsed()));
    }
    let status = child.wait().unwrap();
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines,
        ["line 1", "line 2", "line 3", "line 4", "line 5"],
        "{}",
        d.log()
    );
    assert!(status.success(), "{status}");
    assert_eq!(
        err_reader.join().unwrap(),
        "warn 1\nwarn 2\nwarn 3\nwarn 4\nwarn 5\n"
    );
    // Lines came one by one, not all at the end.
    let spread = seen[4].1 - seen[0].1;
    assert!(
        spread >= Duration::from_secs(2),
        "lines arrived within {spread:?}: {seen:?}"
    );
    // It ended because the sandbox stopped.
    assert_eq!(d.inspect(&id)["state"], "stopped");
    d.ok(&["rm", &id]);
    d.assert_nothing_left();
}

#[test]
fn attach_follows_the_init_from_now_on_and_feeds_its_stdin() {
    let d = Daemon::with_busybox(&[]);
    let id = d.run_detached(&[
        "-i",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo first; read x; echo got $x; exit 4",
    ]);
    d.wait_for_log(&id, "first");
    let mut attach = d
        .command(&["attach", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    attach.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = attach.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    // Output from the attach on: the line before it is not repeated.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got hello\n",
        "{}",
        show(&out)
    );

    // A stopped sandbox: nothing more to show, its exit at once.
    let out = d.cli(&["attach", "--no-stdin", &id]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    d.ok(&["rm", &id]);
    let out = d.cli(&["attach", &id]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    d.assert_nothing_left();
}
