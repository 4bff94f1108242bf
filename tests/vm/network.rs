//! Sandbox networking end to end, through a real `cocoond` and the `cocoon`
//! CLI: `--network default` reaches the outside through NAT, but neither
//! another sandbox nor the host's own services; `--network none` has no
//! NIC; and no namespace, veth, TAP or address is left behind, however a
//! sandbox ends.
//!
//! "Outside" is a network namespace this test makes, joined to the root
//! namespace by the veth `cctout0` (192.0.2.1/24 on the host, 192.0.2.2/24
//! inside, TEST-NET-1). Traffic only ever goes to that namespace, to the
//! sandboxes' own addresses and to the host's loopback and sandbox-link
//! addresses: nothing leaves the machine.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cocoon_tests::daemon::{show, Daemon};
use cocoon_tests::hostnet::{all_sandbox_links, ip};

const OUTSIDE_HOST_IP: &str = "192.0.2.1";
const OUTSIDE_IP: &str = "192.0.2.2";
const OUTSIDE_PORT: u16 = 7000;
const HOST_PORT: u16 = 7001;
const SANDBOX_PORT: u16 = 8080;

/// The "outside" network namespace; deleted on drop.
struct Outside {
    name: String,
}

impl Outside {
    fn new() -> Outside {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the network tests create namespaces and veths: run them as root (`make vm-test` does)"
        );
        let name = format!("cctest-out-{}", std::process::id());
        // A veth left by an earlier, killed run.
        let _ = Command::new("ip").args(["link", "del", "cctout0"]).output();
        ip(&["netns", "add", &name]);
        let o = Outside { name };
        ip(&[
            "link", "add", "cctout0", "type", "veth", "peer", "name", "eth0", "netns", &o.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{OUTSIDE_HOST_IP}/24"),
            "dev",
            "cctout0",
        ]);
        ip(&["link", "set", "cctout0", "up"]);
        ip(&["-n", &o.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &o.name,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &o.name, "link", "set", "eth0", "up"]);
        o
    }

    /// Listens on OUTSIDE_IP:OUTSIDE_PORT in the namespace (before
    /// returning), accepts one connection, tells the client the address it
    /// came from and returns that address.
    fn serve_once(&self) -> JoinHandle<SocketAddr> {
        let ns = self.name.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            enter_netns(&ns);
            let l = TcpListener::bind((OUTSIDE_IP, OUTSIDE_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let start = Instant::now();
            loop {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        let _ = writeln!(s, "hello from outside, you are {}", peer.ip());
                        return peer;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(
                            start.elapsed() < Duration::from_secs(120),
                            "nobody connected to the outside server"
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        ready_rx.recv().unwrap();
        h
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", "cctout0"]).output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
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

/// A service of the host itself (root namespace, every address) that
/// counts the connections it accepts until dropped.
struct HostService {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostService {
    fn start(port: u16) -> HostService {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HostService {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a sandbox with `--network default` running `cmd`; returns its id.
fn run_networked(d: &Daemon, cmd: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--network", "default", "busybox", "--"];
    args.extend_from_slice(cmd);
    d.ok(&args).trim().to_string()
}

/// The sandbox's recorded network (`network` of `cocoon inspect`).
fn network_of(d: &Daemon, id: &str) -> serde_json::Value {
    let s = d.inspect(id);
    assert_eq!(s["state"], "running", "{s}\n{}", d.log());
    assert!(s["network"].is_object(), "no network recorded: {s}");
    s["network"].clone()
}

/// Runs `sh -c script` in the sandbox; returns (exit code, stdout + stderr).
fn sh(d: &Daemon, id: &str, script: &str) -> (i32, String) {
    let out = d.cli(&["exec", id, "sh", "-c", script]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// What remains of sandbox `id`'s network on the host: its namespace and
/// its host-side interface (the TAP and the veth's other end live in the
/// namespace and go with it).
fn leftovers_of(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let ns = format!("/run/netns/cocoon-{id}");
    if std::path::Path::new(&ns).exists() {
        left.push(ns);
    }
    let dev = format!("/sys/class/net/coc{id}");
    if std::path::Path::new(&dev).exists() {
        left.push(dev);
    }
    left
}

fn wait_for_state(d: &Daemon, id: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = d.inspect(id);
        if s["state"] == state {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still {s}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(pid: i64) {
    // SAFETY: kill(2) on a VMM pid read from the daemon just now.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn default_network_reaches_the_outside_through_nat_but_not_the_host() {
    let d = Daemon::with_busybox(&[]);
    let outside = Outside::new();
    let host = HostService::start(HOST_PORT);

    let id = run_networked(&d, &["sleep", "600"]);
    let net = network_of(&d, &id);
    let guest_ip = net["ip"].as_str().unwrap().to_string();
    let gateway = net["gateway"].as_str().unwrap().to_string();
    assert!(guest_ip.starts_with("10.200."), "{net}");
    assert_eq!(net["prefix_len"], 30, "{net}");
    assert_eq!(net["netns"], format!("cocoon-{id}"), "{net}");
    assert_eq!(net["host_interface"], format!("coc{id}"), "{net}");
    assert_eq!(leftovers_of(&id).len(), 2, "namespace and veth exist");

    // The guest's view: eth0 with the recorded address, a default route
    // through the host side, lo up, its address in /etc/hosts, and no
    // loopback name server in /etc/resolv.conf.
    let (code, text) = sh(
        &d,
        &id,
        "ip -4 addr show eth0; ip route; ip link show lo; cat /etc/hosts /etc/resolv.conf",
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("inet {guest_ip}/30")),
        "eth0 not addressed as recorded: {text}"
    );
    assert!(
        text.contains(&format!("default via {gateway} dev eth0")),
        "{text}"
    );
    assert!(text.contains("LOOPBACK,UP"), "lo is not up: {text}");
    assert!(text.contains(&format!("{guest_ip}\t{id}")), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("nameserver 127.")),
        "{text}"
    );

    // (1) Out through NAT: the outside server sees the host's address on
    // its link, not the sandbox's.
    let server = outside.serve_once();
    let (code, text) = sh(
        &d,
        &id,
        &format!("sleep 2 | nc -w 20 {OUTSIDE_IP} {OUTSIDE_PORT}"),
    );
    let peer = server.join().unwrap();
    assert_eq!(code, 0, "{text}");
    assert_eq!(peer.ip().to_string(), OUTSIDE_HOST_IP, "not masqueraded");
    assert!(
        text.contains(&format!("you are {OUTSIDE_HOST_IP}")),
        "{text}"
    );

    // (3) The host's own services are out of reach: on the host side of
    // the sandbox's link and on the host's other addresses alike.
    for target in [gateway.as_str(), OUTSIDE_HOST_IP] {
        let (code, text) = sh(
            &d,
            &id,
            &format!("nc -w 3 {target} {HOST_PORT} </dev/null && echo CONNECTED"),
        );
        assert!(
            code != 0 && !text.contains("CONNECTED"),
            "the sandbox reached the host's service on {target}: {text}"
        );
    }
    assert_eq!(host.accepted(), 0, "the host's service accepted a sandbox");
    // ...while the service itself works (from the host).
    TcpStream::connect(("127.0.0.1", HOST_PORT)).unwrap();
    let start = Instant::now();
    while host.accepted() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "control failed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // (5) Delete: no namespace, veth, TAP, address or VMM left.
    d.ok(&["rm", "-f", &id]);
    assert_eq!(leftovers_of(&id), Vec::<String>::new());
    assert_eq!(all_sandbox_links(), Vec::<String>::new());
    d.assert_nothing_left();
    // For the record (docs/network.md): what set-up and teardown cost here.
    for l in d
        .log()
        .lines()
        .filter(|l| l.contains("network set up") || l.contains("network released"))
    {
        println!("cocoond: {l}");
    }
}

#[test]
fn default_network_sandboxes_cannot_reach_each_other_and_dead_ones_leave_nothing() {
    let mut d = Daemon::with_busybox(&[]);
    let port = SANDBOX_PORT.to_string();
    let server_cmd = ["nc", "-ll", "-p", &port, "-e", "echo", "hello-from-b"];
    let a = run_networked(&d, &["sleep", "600"]);
    let b = run_networked(&d, &server_cmd);
    let (net_a, net_b) = (network_of(&d, &a), network_of(&d, &b));
    let ip_b = net_b["ip"].as_str().unwrap().to_string();
    assert_ne!(net_a["ip"], net_b["ip"]);
    assert_ne!(net_a["gateway"], net_b["gateway"]);

    // Control: B's service answers the host (host to sandbox is allowed).
    let mut got = String::new();
    let start = Instant::now();
    while !got.contains("hello-from-b") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "B's service never answered the host: {got:?}"
        );
        let addr: SocketAddr = format!("{ip_b}:{SANDBOX_PORT}").parse().unwrap();
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            got.clear();
            let _ = s.read_to_string(&mut got);
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // (2) A cannot reach B, neither its address nor the host side of B's
    // link.
    for target in [ip_b.as_str(), net_b["gateway"].as_str().unwrap()] {
        let (code, text) = sh(
            &d,
            &a,
            &format!("nc -w 3 {target} {SANDBOX_PORT} </dev/null"),
        );
        assert!(
            code != 0 && !text.contains("hello-from-b"),
            "sandbox A reached {target}: {text}"
        );
    }

    // (5) A's VMM killed: the sandbox fails and its network is gone.
    let pid = d.inspect(&a)["vmm"]["pid"].as_i64().unwrap();
    kill9(pid);
    let s = wait_for_state(&d, &a, "failed");
    assert!(s["network"].is_null(), "address still held: {s}");
    assert_eq!(leftovers_of(&a), Vec::<String>::new());

    // B's VMM killed while no daemon runs: the next daemon finds it dead
    // and releases its network.
    let pid = d.inspect(&b)["vmm"]["pid"].as_i64().unwrap();
    d.stop();
    kill9(pid);
    let start = Instant::now();
    while !d.vmm_pids().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B's VMM lives on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers_of(&b).len(), 2, "nothing to clean up?");
    d.spawn();
    let s = d.inspect(&b);
    assert_eq!(s["state"], "failed", "{s}");
    assert!(s["network"].is_null(), "address still held: {s}");
    assert_eq!(leftovers_of(&b), Vec::<String>::new(), "{}", d.log());

    // A fresh sandbox after all that works (its address is free again or
    // another from the pool) and is cleaned up like the others.
    let c = run_networked(&d, &["sleep", "600"]);
    network_of(&d, &c);
    d.ok(&["rm", "-f", &a, &b, &c]);
    assert_eq!(all_sandbox_links(), Vec::<String>::new());
    d.assert_nothing_left();
}

#[test]
fn network_none_sandbox_has_only_loopback() {
    let d = Daemon::with_busybox(&[]);
    let out = d.cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "--",
        "sh",
        "-c",
        "ls /sys/class/net; ip link show lo; wc -c < /etc/resolv.conf",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", show(&out));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("lo"), "{text}");
    assert!(!text.contains("eth0"), "a NIC without a network: {text}");
    assert!(text.contains("LOOPBACK,UP"), "lo is not up: {text}");
    assert_eq!(text.lines().last().map(str::trim), Some("0"), "{text}");
    // The CLI's default is no network too.
    let out = d.cli(&["run", "--rm", "busybox", "--", "ls", "/sys/class/net"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lo\n",
        "{}",
        show(&out)
    );
    assert_eq!(all_sandbox_links(), Vec::<String>::new());
    d.assert_nothing_left();
}

#[test]
fn a_networked_sandbox_whose_init_cannot_start_leaves_nothing() {
    let d = Daemon::with_busybox(&[]);
    // The VM and its network come up, then the agent refuses the init: the
    // create fails and --rm removes the failed sandbox.
    let out = d.cli(&[
        "run",
        "--rm",
        "--network",
        "default",
        "busybox",
        "--",
        "/no/such/program",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    assert_eq!(all_sandbox_links(), Vec::<String>::new(), "{}", d.log());
    d.assert_nothing_left();
}
