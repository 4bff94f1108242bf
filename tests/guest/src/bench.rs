//! Benchmark steps of the test guest: block-device throughput and IOPS with
//! O_DIRECT, and vsock stream throughput each way. Each step measures its
//! own time inside the guest (`Instant`, i.e. CLOCK_MONOTONIC) and reports
//! one line that bench/blk.py and bench/vsock.py parse. Nothing here checks
//! data: the correctness tests are the other steps.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const PAGE: usize = 4096;

/// A zero-filled, page-aligned buffer of `len` bytes (O_DIRECT needs the
/// user buffer aligned to the logical block size; a page covers it).
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + PAGE];
        let start = storage.as_ptr().align_offset(PAGE);
        Aligned {
            storage,
            start,
            len,
        }
    }

    fn get(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn open_direct(dev: &str, write: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/dev/{dev}"))
}

fn dev_bytes(f: &File) -> std::io::Result<u64> {
    // Block devices report 0 in st_size; the end offset is the size (the
    // steps use positioned I/O, so moving the offset is harmless).
    std::io::Seek::seek(&mut &*f, std::io::SeekFrom::End(0))
}

fn rate_line(what: &str, bytes: u64, secs: f64) -> String {
    format!(
        "{what} bytes={bytes} secs={secs:.3} mibs={:.1}",
        bytes as f64 / MIB as f64 / secs.max(1e-9)
    )
}

/// Reads the first `mib` MiB of `dev` in 1 MiB O_DIRECT requests, one at a time.
pub fn seq_read(dev: &str, mib: u64) -> std::io::Result<String> {
    let f = open_direct(dev, false)?;
    if dev_bytes(&f)? < mib * MIB {
        return Err(std::io::Error::other(format!(
            "{dev} is smaller than {mib} MiB"
        )));
    }
    let mut buf = Aligned::new(MIB as usize);
    let start = Instant::now();
    for i in 0..mib {
        f.read_exact_at(buf.get_mut(), i * MIB)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(rate_line(
        &format!("blkbench {dev} seqread"),
        mib * MIB,
        secs,
    ))
}

/// Writes the first `mib` MiB of `dev` in 1 MiB O_DIRECT requests, one at
/// a time, then fdatasync (a FLUSH): the time includes data reaching the
/// host file.
pub fn seq_write(dev: &str, mib: u64) -> std::io::Result<String> {
    let f = open_direct(dev, true)?;
    if dev_bytes(&f)? < mib * MIB {
        return Err(std::io::Error::other(format!(
            "{dev} is smaller than {mib} MiB"
        )));
    }
    let mut buf = Aligned::new(MIB as usize);
    cocoon_guest_test::Pattern::new(7).fill(buf.get_mut());
    let start = Instant::now();
    for i in 0..mib {
        f.write_all_at(buf.get(), i * MIB)?;
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    Ok(rate_line(
        &format!("blkbench {dev} seqwrite"),
        mib * MIB,
        secs,
    ))
}

/// 4 KiB O_DIRECT reads at random aligned offsets over the whole device
/// for `secs` seconds, `qd` threads each with one read in flight (queue
/// depth `qd`).
pub fn rand_read(dev: &str, secs: u64, qd: usize) -> std::io::Result<String> {
    let f = open_direct(dev, false)?;
    let blocks = dev_bytes(&f)? / PAGE as u64;
    if blocks == 0 || qd == 0 {
        return Err(std::io::Error::other("empty device or zero queue depth"));
    }
    let f = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..qd)
        .map(|t| {
            let (f, stop, ops) = (f.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut buf = Aligned::new(PAGE);
                // xorshift64, one stream per thread.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ ((t as u64 + 1) << 32);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    f.read_exact_at(buf.get_mut(), (x % blocks) * PAGE as u64)?;
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("reader panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ops = ops.load(Ordering::Relaxed);
    Ok(format!(
        "blkbench {dev} randread qd={qd} ops={ops} secs={elapsed:.3} kiops={:.2}",
        ops as f64 / elapsed.max(1e-9) / 1000.0
    ))
}

/// Listens on vsock `port`, takes one connection and reads it until EOF:
/// host → guest throughput, timed from accept to EOF.
pub fn vsock_sink(port: u32) -> std::io::Result<String> {
    let l = crate::vsock_listen(port)?;
    crate::say(&format!("vsock-listening port={port}"));
    let mut s = crate::vsock_accept(&l)?;
    let start = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            k => total += k as u64,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(rate_line(&format!("vsock-sink port={port}"), total, secs))
}

/// Connects to the host (CID 2) on `port`, sends `mib` MiB, half-closes and
/// waits for the host's EOF (so everything arrived): guest → host
/// throughput, timed from connect to EOF.
pub fn vsock_source(port: u32, mib: u64) -> std::io::Result<String> {
    let start = Instant::now();
    let mut s = crate::vsock_connect(2, port)?;
    let buf = vec![0x5au8; MIB as usize];
    for _ in 0..mib {
        s.write_all(&buf)?;
    }
    // SAFETY: half-close our own socket.
    unsafe { libc::shutdown(crate::fd_of(&s), libc::SHUT_WR) };
    let mut rest = [0u8; 64];
    while s.read(&mut rest)? > 0 {}
    let secs = start.elapsed().as_secs_f64();
    Ok(rate_line(
        &format!("vsock-source port={port}"),
        mib * MIB,
        secs,
    ))
}
