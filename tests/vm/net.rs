//! virtio-net from a real guest: TCP over a TAP, 64 MiB each way, checked
//! by checksum. Each test makes its own network namespace with the TAP
//! `cctap0` (10.0.2.1/24 on the host side, 10.0.2.2/24 in the guest),
//! runs the VMM in it, and serves TCP from a thread that joined it; no
//! traffic leaves that namespace, and it is deleted at the end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cocoon_guest_test::{pattern_checksum, Fnv, Pattern};
use cocoon_tests::hostnet::ip;
use cocoon_tests::{kernel, require_linux_kvm, run_vmm_via, test_initrd, VmmRun, BOOT_DEADLINE};

const MIB: u64 = 1 << 20;
const HOST_IP: &str = "10.0.2.1";
const GUEST_NET: &str = "10.0.2.2/24";
const GUEST_MAC: &str = "02:cc:00:00:00:02";

/// A network namespace holding the TAP `cctap0`; deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(tag: &str) -> NetNs {
        require_linux_kvm();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the net tests create network namespaces and TAPs: run them as root (`make vm-test` does)"
        );
        // The L1's kernel has tun and vhost-net as modules; built in
        // elsewhere.
        let _ = Command::new("modprobe").arg("tun").status();
        let _ = Command::new("modprobe").arg("vhost_net").status();
        let name = format!("cocoon-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns.name, "tuntap", "add", "dev", "cctap0", "mode", "tap",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "cctap0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "cctap0", "up"]);
        ns
    }

    /// Boots the test guest in the namespace with `steps`, its NIC on
    /// vhost-net or on the VMM's own data path.
    fn boot(&self, steps: &str, vhost: bool) -> VmmRun {
        let (k, i) = (kernel(), test_initrd());
        let cmdline = format!("quiet cocoon.test={steps}");
        let net = format!(
            "tap=cctap0,mac={GUEST_MAC},vhost={}",
            if vhost { "on" } else { "off" }
        );
        let args = [
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
            "--memory-mib",
            "256",
            "--vcpus",
            "2",
            "--console",
            "--no-rng",
            "--net",
            &net,
            "--cmdline",
            &cmdline,
        ];
        let run = run_vmm_via(&["ip", "netns", "exec", &self.name], &args, BOOT_DEADLINE);
        assert_eq!(run.status.code(), Some(0), "{}", run.dump());
        assert!(run.stdout.contains("cocoon-test: done"), "{}", run.dump());
        assert_eq!(
            run.stderr
                .contains("cocoon-vmm: net cctap0: frames through vhost-net"),
            vhost,
            "{}",
            run.dump()
        );
        run
    }

    /// Listens on HOST_IP:`port` inside the namespace (before returning),
    /// accepts one connection and hands it to `serve` on its own thread.
    fn serve<R, F>(&self, port: u16, serve: F) -> JoinHandle<R>
    where
        R: Send + 'static,
        F: FnOnce(TcpStream) -> R + Send + 'static,
    {
        let ns = self.name.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            enter_netns(&ns);
            let l = TcpListener::bind((HOST_IP, port)).unwrap();
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let start = Instant::now();
            let s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(start.elapsed() < BOOT_DEADLINE, "the guest never connected");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(BOOT_DEADLINE)).unwrap();
            serve(s)
        });
        ready_rx.recv().unwrap();
        h
    }
}

/// Moves the calling thread into network namespace `name`.
fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    // SAFETY: f is an open namespace file; setns changes only this thread's
    // network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.name, "link", "del", "cctap0"])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The `cocoon-test:` line starting with `prefix`.
fn result_line<'a>(run: &'a VmmRun, prefix: &str) -> &'a str {
    run.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("cocoon-test: ")
                .filter(|r| r.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix} line in\n{}", run.dump()))
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

#[test]
fn net_tcp_guest_to_host_64mib() {
    guest_to_host(false);
}

#[test]
fn net_tcp_guest_to_host_64mib_vhost() {
    guest_to_host(true);
}

#[test]
fn net_tcp_host_to_guest_64mib() {
    host_to_guest(false);
}

#[test]
fn net_tcp_host_to_guest_64mib_vhost() {
    host_to_guest(true);
}

#[test]
fn net_vhost_survives_a_driver_rebind() {
    // The guest resets the device (unbind) and activates it again (bind):
    // the rings are stopped and handed to the kernel a second time, both
    // on a vCPU thread under seccomp, and data still flows.
    let steps = format!("net-up:{GUEST_NET},net-rebind,net-up:{GUEST_NET}");
    let run = host_to_guest_after("rebind", 5203, &steps, true, 11, 16);
    let rebind = result_line(&run, "net-rebind");
    assert!(
        rebind.starts_with("net-rebind dev=virtio"),
        "{}",
        run.dump()
    );
}

fn guest_to_host(vhost: bool) {
    let ns = NetNs::new("g2h");
    let server = ns.serve(5201, |mut s| {
        let mut h = Fnv::default();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        (total, h.value())
    });
    let run = ns.boot(
        &format!("net-up:{GUEST_NET},tcp-send:{HOST_IP}:5201:7:64"),
        vhost,
    );
    let (total, sum) = server.join().unwrap();
    let up = result_line(&run, "net-up");
    assert_eq!(field(up, "mac"), GUEST_MAC, "{up}");
    let line = result_line(&run, "tcp-send");
    println!("guest->host: {line}");
    assert_eq!(total, 64 * MIB, "{}", run.dump());
    assert_eq!(sum, pattern_checksum(7, 64 * MIB));
    assert_eq!(field(line, "sum"), format!("{sum:016x}"), "{line}");
}

fn host_to_guest(vhost: bool) {
    let run = host_to_guest_after("h2g", 5202, &format!("net-up:{GUEST_NET}"), vhost, 9, 64);
    println!("{}", result_line(&run, "net-up"));
}

/// Sends `mib` MiB of pattern `seed` from the host to the guest's
/// `tcp-recv`, which runs after the guest's `steps` (ending with eth0 up),
/// checks what arrived, and returns the run.
fn host_to_guest_after(
    tag: &str,
    port: u16,
    steps: &str,
    vhost: bool,
    seed: u64,
    mib: u64,
) -> VmmRun {
    let ns = NetNs::new(tag);
    let server = ns.serve(port, move |mut s| {
        let mut p = Pattern::new(seed);
        let mut buf = vec![0u8; MIB as usize];
        for _ in 0..mib {
            p.fill(&mut buf);
            s.write_all(&buf).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let run = ns.boot(&format!("{steps},tcp-recv:{HOST_IP}:{port}"), vhost);
    server.join().unwrap();
    let line = result_line(&run, "tcp-recv");
    println!("host->guest: {line}");
    assert_eq!(field(line, "bytes"), (mib * MIB).to_string(), "{line}");
    assert_eq!(
        field(line, "sum"),
        format!("{:016x}", pattern_checksum(seed, mib * MIB)),
        "{line}"
    );
    run
}
