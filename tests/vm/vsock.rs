//! virtio-vsock from a real guest, both directions, through the hybrid
//! Unix-socket bridge: host-initiated (`CONNECT <port>` on the device
//! socket) and guest-initiated (to `<socket>_<port>`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_guest_test::{pattern_checksum, Fnv, Pattern};
use cocoon_tests::{kernel, require_linux_kvm, test_initrd, vmm_bin, BOOT_DEADLINE};

const MIB: u64 = 1 << 20;

struct Vm {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Starts a VM whose vsock socket is `<dir>/v.sock`.
    fn start(steps: &str, dir: tempfile::TempDir) -> Vm {
        require_linux_kvm();
        let socket = dir.path().join("v.sock");
        let child = Command::new(vmm_bin())
            .args([
                "--kernel",
                kernel().to_str().unwrap(),
                "--initrd",
                test_initrd().to_str().unwrap(),
            ])
            .args(["--memory-mib", "256", "--vcpus", "2", "--console"])
            .arg("--vsock")
            .arg(&socket)
            .args(["--cmdline", &format!("quiet cocoon.test={steps}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vm {
            child,
            socket,
            _dir: dir,
        }
    }

    /// Waits for the VM to end; returns its console output.
    fn finish(mut self) -> String {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(status.success(), "VMM failed: {status}\n{out}\n{err}");
                return format!("{out}\n--- vmm stderr\n{err}");
            }
            if start.elapsed() > BOOT_DEADLINE {
                let _ = self.child.kill();
                let mut out = String::new();
                let _ = self.child.stdout.take().unwrap().read_to_string(&mut out);
                panic!("VM did not finish\n{out}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Connects to guest `port` through the device socket, retrying while the
/// guest is not listening yet (the device answers with a closed stream).
fn connect(socket: &Path, port: u32) -> UnixStream {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < BOOT_DEADLINE,
            "could not connect to guest port {port}"
        );
        let Ok(mut s) = UnixStream::connect(socket) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(s.try_clone().unwrap());
        if r.read_line(&mut line).is_ok() && line.starts_with("OK ") {
            assert!(r.buffer().is_empty());
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `len` bytes of pattern `seed` and reads the echo; returns the
/// checksum of what came back.
fn echo_round_trip(mut s: UnixStream, seed: u64, len: u64) -> (u64, u64) {
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut p = Pattern::new(seed);
        let mut buf = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB) as usize;
            p.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got.extend_from_slice(&buf[..n]);
    }
    sender.join().unwrap();
    (got.len() as u64, h.value())
}

fn result_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("cocoon-test: ")
                .filter(|r| r.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix} line in\n{out}"))
}

#[test]
fn vsock_host_initiated_64mib_each_way() {
    let vm = Vm::start("vsock-echo:5000:1", tempfile::tempdir().unwrap());
    let s = connect(&vm.socket, 5000);
    let (total, sum) = echo_round_trip(s, 41, 64 * MIB);
    let out = vm.finish();
    assert_eq!(total, 64 * MIB, "{out}");
    assert_eq!(sum, pattern_checksum(41, 64 * MIB));
    assert!(
        result_line(&out, "vsock-echo").contains(&format!("bytes={}", 64 * MIB)),
        "{out}"
    );
}

#[test]
fn vsock_guest_initiated_64mib_each_way() {
    // Listen where the guest's connection to port 6000 will be bridged,
    // before the guest can try.
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("v.sock_6000")).unwrap();
    let vm = Vm::start("vsock-send:6000:42:64", dir);
    let (mut s, _) = listener.accept().unwrap();
    // Echo everything back until the guest half-closes.
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let out = vm.finish();
    let line = result_line(&out, "vsock-send");
    let want = format!("{:016x}", pattern_checksum(42, 64 * MIB));
    assert!(line.contains(&format!("sent_sum={want}")), "{line}");
    assert!(
        line.contains(&format!("recv_bytes={} recv_sum={want}", 64 * MIB)),
        "{line}"
    );
}

#[test]
fn vsock_64_concurrent_connections() {
    let vm = Vm::start("vsock-echo:5001:64", tempfile::tempdir().unwrap());
    let socket = vm.socket.clone();
    let threads: Vec<_> = (0..64u64)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let s = connect(&socket, 5001);
                echo_round_trip(s, 100 + i, MIB)
            })
        })
        .collect();
    let results: Vec<(u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let out = vm.finish();
    for (i, (total, sum)) in results.iter().enumerate() {
        assert_eq!(*total, MIB, "connection {i}: {results:?}\n{out}");
        assert_eq!(
            *sum,
            pattern_checksum(100 + i as u64, MIB),
            "connection {i}"
        );
    }
    assert!(
        result_line(&out, "vsock-echo").contains(&format!("conns=64 bytes={}", 64 * MIB)),
        "{out}"
    );
}
