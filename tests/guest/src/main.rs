//! cocoon-guest-test: /init of the device-test initramfs. Runs the steps
//! named on the kernel command line (`cocoon.test=step,step,...`), prints
//! one `cocoon-test:` line per step on the console, and powers the VM off
//! through the VMM's debug port. Test infrastructure, not product.
//!
//! Steps: `disks` (every virtio disk: size, id, read-only flag),
//! `read:DEV` (checksum of the whole device), `write:DEV:SEED:MIB` (write a
//! pattern, fsync), `rowrite:DEV` (try to write a read-only device),
//! `forcewrite:DEV` (clear the kernel's read-only flag, write with O_DIRECT),
//! `rng:KIB` (read /dev/hwrng), `getrandom` (is the pool ready at once?),
//! `vsock-echo:PORT:N` (serve N echo connections at once),
//! `vsock-send:PORT:SEED:MIB` (send to the host, read back until EOF),
//! `net-up:IP/PREFIX` (address eth0 and bring it up), `tcp-send:IP:PORT:SEED:MIB`
//! (connect, send a pattern, half-close, wait for the host's EOF),
//! `tcp-recv:IP:PORT` (connect, checksum everything until EOF) and
//! `tcp-sink:IP:PORT` (the same without the checksum, for benchmarks).
//!
//! Benchmark steps (`bench.rs`, timed inside the guest):
//! `blkbench:DEV:seqread:MIB`, `blkbench:DEV:seqwrite:MIB` (1 MiB O_DIRECT
//! requests, one at a time; the write ends with fdatasync),
//! `blkbench:DEV:randread:SECS:QD` (4 KiB O_DIRECT random reads, QD threads),
//! `vsock-sink:PORT` (take one host connection, read to EOF) and
//! `vsock-source:PORT:MIB` (send MIB MiB to the host, wait for its EOF).

#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use cocoon_guest_test::{Fnv, Pattern};

mod bench;

const DEBUG_PORT: u16 = 0x0cc0;
const POWER_OFF: u8 = 0x02;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "cocoon-test: {line}");
    let _ = out.flush();
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    if let (Ok(s), Ok(t), Ok(f)) = (
        CString::new(source),
        CString::new(target),
        CString::new(fstype),
    ) {
        // SAFETY: valid NUL-terminated strings; null data is allowed.
        unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    }
}

fn console() {
    if let Ok(p) = CString::new("/dev/console") {
        // SAFETY: valid path; the fd is checked.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if fd >= 0 {
            for t in 0..3 {
                // SAFETY: fd is open.
                unsafe { libc::dup2(fd, t) };
            }
        }
    }
}

fn power_off() -> ! {
    // SAFETY: no preconditions.
    unsafe {
        libc::tcdrain(1);
        libc::sync();
        if libc::ioperm(libc::c_ulong::from(DEBUG_PORT), 1, 1) == 0 {
            core::arch::asm!("out dx, al", in("dx") DEBUG_PORT, in("al") POWER_OFF, options(nomem, nostack, preserves_flags));
        }
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1)
}

fn read_sys(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "-".into())
}

fn disks() {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n.starts_with("vd"));
    names.sort();
    for n in names {
        say(&format!(
            "disk {n} sectors={} serial={} ro={}",
            read_sys(&format!("/sys/block/{n}/size")),
            read_sys(&format!("/sys/block/{n}/serial")),
            read_sys(&format!("/sys/block/{n}/ro"))
        ));
    }
}

fn read_dev(dev: &str) -> Result<String, std::io::Error> {
    let mut f = File::open(format!("/dev/{dev}"))?;
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok(format!("read {dev} bytes={total} sum={:016x}", h.value()))
}

fn write_dev(dev: &str, seed: u64, mib: u64) -> Result<String, std::io::Error> {
    let mut f = OpenOptions::new().write(true).open(format!("/dev/{dev}"))?;
    let mut p = Pattern::new(seed);
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        p.fill(&mut buf);
        f.write_all(&buf)?;
        h.update(&buf);
    }
    f.sync_all()?;
    Ok(format!(
        "write {dev} bytes={} sum={:016x}",
        mib << 20,
        h.value()
    ))
}

fn ro_write(dev: &str) -> String {
    let r = OpenOptions::new()
        .write(true)
        .open(format!("/dev/{dev}"))
        .and_then(|mut f| {
            f.write_all(&[0xffu8; 4096])?;
            f.sync_all()
        });
    match r {
        Ok(()) => format!("rowrite {dev} result=written"),
        Err(e) => format!(
            "rowrite {dev} result=refused errno={}",
            e.raw_os_error().unwrap_or(0)
        ),
    }
}

/// Clears the kernel's read-only flag on `dev` (BLKROSET) and writes with
/// O_DIRECT, so the request reaches the device: a read-only virtio disk
/// must fail it.
fn force_write(dev: &str) -> String {
    const BLKROSET: libc::c_ulong = 0x125d;
    let path = format!("/dev/{dev}");
    let r = File::open(&path).and_then(|f| {
        let zero: libc::c_int = 0;
        // SAFETY: BLKROSET reads one int from the pointer, which is valid.
        if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKROSET, &zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut w = std::os::unix::fs::OpenOptionsExt::custom_flags(
            OpenOptions::new().write(true),
            libc::O_DIRECT,
        )
        .open(&path)?;
        let layout =
            std::alloc::Layout::from_size_align(4096, 4096).map_err(std::io::Error::other)?;
        // O_DIRECT needs an aligned buffer.
        let mut buf = vec![0u8; 8192];
        let off = buf.as_ptr().align_offset(layout.align());
        buf[off..off + 4096].fill(0xee);
        w.write_all(&buf[off..off + 4096])?;
        w.sync_all()
    });
    match r {
        Ok(()) => format!("forcewrite {dev} result=written"),
        Err(e) => format!(
            "forcewrite {dev} result=refused errno={}",
            e.raw_os_error().unwrap_or(0)
        ),
    }
}

fn rng(kib: u64) -> Result<String, std::io::Error> {
    let mut f = File::open("/dev/hwrng")?;
    let mut buf = vec![0u8; (kib as usize) << 10];
    f.read_exact(&mut buf)?;
    let zeros = buf.iter().filter(|&&b| b == 0).count();
    let mut h = Fnv::default();
    h.update(&buf);
    Ok(format!(
        "rng bytes={} zero_bytes={zeros} sum={:016x} source={}",
        buf.len(),
        h.value(),
        read_sys("/sys/class/misc/hw_random/rng_current")
    ))
}

/// An AF_VSOCK stream socket as a File (Read + Write).
fn vsock_socket() -> std::io::Result<File> {
    // SAFETY: plain socket creation; the fd is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn fd_of(f: &File) -> libc::c_int {
    std::os::fd::AsRawFd::as_raw_fd(f)
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A vsock stream socket listening on `port` of any local CID.
fn vsock_listen(port: u32) -> std::io::Result<File> {
    let l = vsock_socket()?;
    let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
    // SAFETY: addr is a valid sockaddr_vm of the size passed.
    check(unsafe {
        libc::bind(
            fd_of(&l),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as u32,
        )
    })?;
    // SAFETY: listening on our own socket.
    check(unsafe { libc::listen(fd_of(&l), 128) })?;
    Ok(l)
}

/// Accepts one connection on `l`, with SO_LINGER set.
fn vsock_accept(l: &File) -> std::io::Result<File> {
    // SAFETY: accept with null address output is allowed.
    let c = unsafe {
        libc::accept4(
            fd_of(l),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if c < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Linger on close until the host side has taken everything (the
    // device answers the close once its buffer is drained): the VM
    // powers off right after, and queued data would be lost.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 60,
    };
    // SAFETY: c is a valid socket; the option value is a live linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            c,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    // SAFETY: c is a fresh connected socket we own.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(c) })
}

/// A vsock stream connected to `cid`:`port`.
fn vsock_connect(cid: u32, port: u32) -> std::io::Result<File> {
    let s = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    // SAFETY: addr is a valid sockaddr_vm of the size passed.
    check(unsafe {
        libc::connect(
            fd_of(&s),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as u32,
        )
    })?;
    Ok(s)
}

/// Listens on `port`, serves `n` connections at once, echoing each until EOF.
fn vsock_echo(port: u32, n: usize) -> std::io::Result<String> {
    let l = vsock_listen(port)?;
    say(&format!("vsock-listening port={port}"));
    let mut threads = Vec::new();
    for _ in 0..n {
        let mut s = vsock_accept(&l)?;
        threads.push(std::thread::spawn(move || -> u64 {
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        if s.write_all(&buf[..k]).is_err() {
                            break;
                        }
                        total += k as u64;
                    }
                }
            }
            total
        }));
    }
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    Ok(format!("vsock-echo port={port} conns={n} bytes={total}"))
}

/// Connects to the host (CID 2) on `port`, sends `mib` MiB of pattern
/// `seed` while reading back whatever the host returns until EOF.
fn vsock_send(port: u32, seed: u64, mib: u64) -> std::io::Result<String> {
    let s = vsock_connect(2, port)?;
    let mut writer = s.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut p = Pattern::new(seed);
        let mut h = Fnv::default();
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            p.fill(&mut buf);
            writer.write_all(&buf)?;
            h.update(&buf);
        }
        // SAFETY: half-close our own socket.
        unsafe { libc::shutdown(fd_of(&writer), libc::SHUT_WR) };
        Ok(h.value())
    });
    let mut reader = s;
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                total += k as u64;
            }
            Err(e) => return Err(e),
        }
    }
    let sent = sender
        .join()
        .map_err(|_| std::io::Error::other("sender panicked"))??;
    Ok(format!(
        "vsock-send port={port} sent_sum={sent:016x} recv_bytes={total} recv_sum={:016x}",
        h.value()
    ))
}

/// Unbinds the virtio-net driver from its device and binds it again: the
/// device is reset and activated a second time.
fn net_rebind() -> std::io::Result<String> {
    let drv = "/sys/bus/virtio/drivers/virtio_net";
    let dev = std::fs::read_dir(drv)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("virtio"))
        .ok_or_else(|| std::io::Error::other("no device bound to virtio_net"))?;
    std::fs::write(format!("{drv}/unbind"), &dev)?;
    std::fs::write(format!("{drv}/bind"), &dev)?;
    Ok(format!("net-rebind dev={dev}"))
}

/// Addresses eth0 with `ip/prefix` and brings it up (SIOCSIFADDR,
/// SIOCSIFNETMASK, SIOCSIFFLAGS), then reports its MAC.
fn net_up(spec: &str) -> std::io::Result<String> {
    let bad = || std::io::Error::other(format!("bad address {spec}"));
    let (ip, prefix) = spec.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    // SAFETY: plain socket creation; the fd is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let ifreq = || {
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r.ifr_name.iter_mut().zip(b"eth0") {
            *d = *s as libc::c_char;
        }
        r
    };
    let sockaddr = |a: u32| {
        // SAFETY: sockaddr_in is plain data; all-zero is valid.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = a.to_be();
        // SAFETY: sockaddr_in and sockaddr have the same size on Linux and
        // both are plain data.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    };
    let mut r = ifreq();
    r.ifr_ifru.ifru_addr = sockaddr(u32::from(ip));
    // SAFETY: the request reads a live ifreq.
    check(unsafe { libc::ioctl(fd_of(&sock), libc::SIOCSIFADDR, &r) })?;
    let mut r = ifreq();
    r.ifr_ifru.ifru_netmask = sockaddr(mask);
    // SAFETY: the request reads a live ifreq.
    check(unsafe { libc::ioctl(fd_of(&sock), libc::SIOCSIFNETMASK, &r) })?;
    let mut r = ifreq();
    // SAFETY: the request fills a live ifreq.
    check(unsafe { libc::ioctl(fd_of(&sock), libc::SIOCGIFFLAGS, &mut r) })?;
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: the request reads a live ifreq.
    check(unsafe { libc::ioctl(fd_of(&sock), libc::SIOCSIFFLAGS, &r) })?;
    Ok(format!(
        "net-up eth0 ip={ip}/{prefix} mac={} features={}",
        read_sys("/sys/class/net/eth0/address"),
        read_sys("/sys/class/net/eth0/device/features")
    ))
}

/// Connects to `ip:port`, retrying while the host is not listening yet.
fn tcp_connect(ip: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|_| std::io::Error::other("bad address"))?;
    let mut last = None;
    for _ in 0..300 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("connect failed")))
}

/// Sends `mib` MiB of pattern `seed`, half-closes, and waits for the host
/// to close (so everything arrived before the VM powers off).
fn tcp_send(ip: &str, port: u16, seed: u64, mib: u64) -> std::io::Result<String> {
    let mut s = tcp_connect(ip, port)?;
    let start = std::time::Instant::now();
    let mut p = Pattern::new(seed);
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        p.fill(&mut buf);
        s.write_all(&buf)?;
        h.update(&buf);
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "tcp-send bytes={} sum={:016x} secs={secs:.3}",
        mib << 20,
        h.value()
    ))
}

/// Reads until EOF; reports the byte count, checksum (when `sum`) and rate.
fn tcp_recv(ip: &str, port: u16, sum: bool) -> std::io::Result<String> {
    let mut s = tcp_connect(ip, port)?;
    let start = std::time::Instant::now();
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if sum {
            h.update(&buf[..n]);
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let gbits = total as f64 * 8.0 / secs.max(1e-9) / 1e9;
    Ok(if sum {
        format!(
            "tcp-recv bytes={total} sum={:016x} secs={secs:.3} gbits={gbits:.3}",
            h.value()
        )
    } else {
        format!("tcp-sink bytes={total} secs={secs:.3} gbits={gbits:.3}")
    })
}

fn getrandom_ready() -> String {
    let mut b = [0u8; 16];
    // SAFETY: b is a live buffer of the given length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 16 {
        "getrandom ready=yes".into()
    } else {
        format!(
            "getrandom ready=no errno={}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    }
}

fn step(s: &str) {
    let parts: Vec<&str> = s.split(':').collect();
    let out = match parts.as_slice() {
        ["disks"] => {
            disks();
            return;
        }
        ["read", dev] => read_dev(dev).unwrap_or_else(|e| format!("read {dev} error={e}")),
        ["write", dev, seed, mib] => match (seed.parse(), mib.parse()) {
            (Ok(seed), Ok(mib)) => {
                write_dev(dev, seed, mib).unwrap_or_else(|e| format!("write {dev} error={e}"))
            }
            _ => format!("bad step {s}"),
        },
        ["rowrite", dev] => ro_write(dev),
        ["forcewrite", dev] => force_write(dev),
        ["rng", kib] => match kib.parse() {
            Ok(k) => rng(k).unwrap_or_else(|e| format!("rng error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["getrandom"] => getrandom_ready(),
        ["vsock-echo", port, n] => match (port.parse(), n.parse()) {
            (Ok(port), Ok(n)) => {
                vsock_echo(port, n).unwrap_or_else(|e| format!("vsock-echo error={e}"))
            }
            _ => format!("bad step {s}"),
        },
        ["vsock-send", port, seed, mib] => match (port.parse(), seed.parse(), mib.parse()) {
            (Ok(port), Ok(seed), Ok(mib)) => {
                vsock_send(port, seed, mib).unwrap_or_else(|e| format!("vsock-send error={e}"))
            }
            _ => format!("bad step {s}"),
        },
        ["net-up", spec] => net_up(spec).unwrap_or_else(|e| format!("net-up error={e}")),
        ["net-rebind"] => net_rebind().unwrap_or_else(|e| format!("net-rebind error={e}")),
        ["tcp-send", ip, port, seed, mib] => match (port.parse(), seed.parse(), mib.parse()) {
            (Ok(port), Ok(seed), Ok(mib)) => {
                tcp_send(ip, port, seed, mib).unwrap_or_else(|e| format!("tcp-send error={e}"))
            }
            _ => format!("bad step {s}"),
        },
        ["tcp-recv", ip, port] => match port.parse() {
            Ok(port) => tcp_recv(ip, port, true).unwrap_or_else(|e| format!("tcp-recv error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["tcp-sink", ip, port] => match port.parse() {
            Ok(port) => tcp_recv(ip, port, false).unwrap_or_else(|e| format!("tcp-sink error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["blkbench", dev, "seqread", mib] => match mib.parse() {
            Ok(mib) => bench::seq_read(dev, mib)
                .unwrap_or_else(|e| format!("blkbench {dev} seqread error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["blkbench", dev, "seqwrite", mib] => match mib.parse() {
            Ok(mib) => bench::seq_write(dev, mib)
                .unwrap_or_else(|e| format!("blkbench {dev} seqwrite error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["blkbench", dev, "randread", secs, qd] => match (secs.parse(), qd.parse()) {
            (Ok(secs), Ok(qd)) => bench::rand_read(dev, secs, qd)
                .unwrap_or_else(|e| format!("blkbench {dev} randread error={e}")),
            _ => format!("bad step {s}"),
        },
        ["vsock-sink", port] => match port.parse() {
            Ok(port) => bench::vsock_sink(port).unwrap_or_else(|e| format!("vsock-sink error={e}")),
            Err(_) => format!("bad step {s}"),
        },
        ["vsock-source", port, mib] => match (port.parse(), mib.parse()) {
            (Ok(port), Ok(mib)) => {
                bench::vsock_source(port, mib).unwrap_or_else(|e| format!("vsock-source error={e}"))
            }
            _ => format!("bad step {s}"),
        },
        _ => format!("bad step {s}"),
    };
    say(&out);
}

/// Entry point (no std runtime start-up: PID 1 may have no stdio).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    mount("devtmpfs", "/dev", "devtmpfs");
    console();
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    // First, before anything could have waited for entropy.
    let ready = getrandom_ready();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let steps = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cocoon.test="))
        .unwrap_or("");
    for s in steps.split(',').filter(|s| !s.is_empty()) {
        if s == "getrandom" {
            say(&ready);
        } else {
            step(s);
        }
    }
    say("done");
    power_off()
}
