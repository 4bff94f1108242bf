//! The net backend: an existing TAP device, attached by name through
//! `/dev/net/tun` with a 12-byte `virtio_net_hdr_v1` in front of every
//! frame (IFF_VNET_HDR + TUNSETVNETHDRSZ), so the guest's checksum and
//! segmentation offload metadata passes through unchanged. The fd is
//! non-blocking: reads and writes never stall the event loop.
//!
//! It never creates a TAP: whoever runs the VMM creates it (with its
//! addresses, bridge, namespace), and a missing device is an error rather
//! than a fresh, unconfigured interface.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::request::TxFrame;
use super::VNET_HDR_LEN;

/// Longest interface name, without the terminating NUL (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

/// Most iovecs one `readv` takes (UIO_MAXIOV).
const MAX_IOVECS: usize = 1024;

/// The offloads Cocoon asks the TAP for when the guest accepts them.
pub const OFFLOAD_CSUM: u32 = libc::TUN_F_CSUM;
/// TCPv4 segmentation offload towards the guest.
pub const OFFLOAD_TSO4: u32 = libc::TUN_F_TSO4;
/// TCPv6 segmentation offload towards the guest.
pub const OFFLOAD_TSO6: u32 = libc::TUN_F_TSO6;

/// Errors opening or configuring a TAP.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// No interface of that name exists (in this network namespace).
    #[error("tap device '{0}' not found (create it first, e.g. `ip tuntap add dev {0} mode tap`)")]
    NotFound(String),
    /// The name cannot be an interface name.
    #[error("invalid tap name '{0}': 1-{MAX_IFNAME} bytes, no '/', ':' or whitespace")]
    BadName(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// TUNSETIFF refused: not a TAP, busy, or not ours.
    #[error("cannot attach to tap device '{name}': {err}")]
    Attach {
        /// Interface name.
        name: String,
        /// Cause.
        err: io::Error,
    },
    /// The TAP lacks virtio-net header support.
    #[error("tap device '{name}' does not support virtio-net headers: {err}")]
    VnetHdr {
        /// Interface name.
        name: String,
        /// Cause.
        err: io::Error,
    },
}

/// Whether `name` is a valid Linux interface name (see dev_valid_name()).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// An attached TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// Whether TUNSETOFFLOAD accepts checksum and TSO offloads.
    offloads_supported: bool,
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data (a name array and a union of plain data);
    // all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

impl Tap {
    /// Attaches to the existing TAP `name` in the current network namespace.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if !valid_ifname(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let cname = CString::new(name).map_err(|_| TapError::BadName(name.to_string()))?;
        // TUNSETIFF would create a missing device; look first.
        // SAFETY: cname is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads (and may update) one ifreq, which is live
        // and properly initialised; the fd is ours.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(TapError::Attach {
                name: name.to_string(),
                err,
            });
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from a live pointer.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(TapError::VnetHdr {
                name: name.to_string(),
                err: io::Error::last_os_error(),
            });
        }
        let mut tap = Tap {
            file,
            name: name.to_string(),
            offloads_supported: false,
        };
        // Probe once: offloads are offered to the guest only if the TAP
        // takes them. Nothing is enabled until the guest acks features.
        tap.offloads_supported = tap
            .set_offload(OFFLOAD_CSUM | OFFLOAD_TSO4 | OFFLOAD_TSO6)
            .is_ok();
        let _ = tap.set_offload(0);
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TAP's file, for vhost-net to read and write frames through.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether checksum and TSO offloads can be enabled.
    pub fn offloads_supported(&self) -> bool {
        self.offloads_supported
    }

    /// Tells the TAP which offloads the reader (the guest) accepts in the
    /// frames it delivers (TUN_F_* flags).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is ours.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one frame (virtio-net header first) into `buf`; `WouldBlock`
    /// when the TAP has nothing.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the pointer and length describe `buf`, a live mutable slice.
            let n =
                unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads one frame (virtio-net header first) straight into guest
    /// memory with one `readv`: `segments` in order, each inside guest
    /// memory (the RX parser checked them). Returns the frame's length;
    /// when the frame did not fit, the TAP filled the segments and dropped
    /// the rest, and the length returned is the frame's full length (Linux
    /// since 3.19), so more than the segments hold. `WouldBlock` when the
    /// TAP has nothing.
    pub fn read_frame_into(
        &self,
        mem: &GuestMemoryMmap,
        segments: &[(GuestAddress, u32)],
    ) -> io::Result<usize> {
        let mut slices = Vec::with_capacity(segments.len());
        for &(addr, len) in segments {
            // A region boundary inside a segment splits it into several slices.
            let iter = mem
                .get_slices(addr, len as usize, Permissions::Write)
                .map_err(|e| io::Error::other(e.to_string()))?;
            for s in iter {
                slices.push(s.map_err(|e| io::Error::other(e.to_string()))?);
            }
        }
        if slices.is_empty() || slices.len() > MAX_IOVECS {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let iovecs: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        // At most MAX_IOVECS (checked above).
        let count = iovecs.len() as libc::c_int;
        loop {
            // SAFETY: every iovec points into guest memory that `guards`
            // keeps mapped for the duration of the call, with the length of
            // the checked slice it came from; guest memory is plain bytes,
            // so any content the kernel writes there is valid.
            let n = unsafe { libc::readv(self.file.as_raw_fd(), iovecs.as_ptr(), count) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Writes a frame that parsed with one writev: the checked copy of its
    /// header, then the Ethernet frame straight from guest memory.
    /// `WouldBlock` when the TAP's queue is full.
    pub fn write_frame(&self, mem: &GuestMemoryMmap, frame: &TxFrame) -> io::Result<usize> {
        let mut slices = Vec::with_capacity(frame.segments.len());
        for &(addr, len) in &frame.segments {
            // The parser checked the range; a region boundary inside a
            // segment splits it into several slices.
            let iter = mem
                .get_slices(addr, len as usize, Permissions::Read)
                .map_err(|e| io::Error::other(e.to_string()))?;
            for s in iter {
                slices.push(s.map_err(|e| io::Error::other(e.to_string()))?);
            }
        }
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
        let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(slices.len() + 1);
        iovecs.push(libc::iovec {
            iov_base: frame.hdr.bytes.as_ptr() as *mut libc::c_void,
            iov_len: frame.hdr.bytes.len(),
        });
        iovecs.extend(guards.iter().zip(&slices).map(|(g, s)| libc::iovec {
            iov_base: g.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        }));
        let count = libc::c_int::try_from(iovecs.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        loop {
            // SAFETY: the first iovec is the header array in `frame`, alive
            // for the call; every other points into guest memory that
            // `guards` keeps mapped for the duration of the call, with the
            // length of the checked slice it came from. The kernel only
            // reads them.
            let n = unsafe { libc::writev(self.file.as_raw_fd(), iovecs.as_ptr(), count) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("cctap0"));
        assert!(valid_ifname(&"a".repeat(15)));
        assert!(!valid_ifname(&"a".repeat(16)));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("."));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("eth0:1"));
    }

    #[test]
    fn missing_tap_is_not_created() {
        let e = Tap::open("cocoon-nx0").unwrap_err();
        assert!(matches!(e, TapError::NotFound(_)), "{e}");
        assert!(e
            .to_string()
            .starts_with("tap device 'cocoon-nx0' not found"));
    }
}
