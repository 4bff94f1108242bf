//! The block backend: a raw image file. Executes parsed requests against
//! guest memory through vm-memory's volatile accessors. A read-only disk is
//! opened read-only, so even a bug here could not modify the file.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestMemory, VolatileSlice};

use super::request::{Request, RequestType, S_IOERR, S_OK, S_UNSUPP};
use super::{ID_BYTES, SECTOR_SIZE};

/// A disk image file.
pub struct Disk {
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_BYTES],
}

impl Disk {
    /// Wraps an open file of `size` bytes.
    pub fn new(file: File, size: u64, read_only: bool, id: &str) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Disk {
            file,
            read_only,
            capacity: size / SECTOR_SIZE,
            id: id_bytes,
        }
    }

    /// Size in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Executes `req`; returns the status byte and how many bytes of guest
    /// memory were written (excluding the status byte).
    pub fn execute<M: GuestMemory>(&mut self, mem: &M, req: &Request) -> (u8, u32) {
        match req.kind {
            RequestType::In => match self.transfer(mem, req, false) {
                Ok(()) => (S_OK, req.data_len.min(u64::from(u32::MAX)) as u32),
                Err(_) => (S_IOERR, 0),
            },
            RequestType::Out if self.read_only => (S_IOERR, 0),
            RequestType::Out => match self.transfer(mem, req, true) {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            RequestType::Flush if self.read_only => (S_OK, 0),
            RequestType::Flush => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            RequestType::GetId => {
                let mut written = 0usize;
                for &(addr, len) in &req.data {
                    let n = (len as usize).min(ID_BYTES - written);
                    if n == 0 {
                        break;
                    }
                    if mem
                        .write_slice(&self.id[written..written + n], addr)
                        .is_err()
                    {
                        return (S_IOERR, 0);
                    }
                    written += n;
                }
                (S_OK, written as u32)
            }
            RequestType::Unsupported(_) => (S_UNSUPP, 0),
        }
    }

    fn transfer<M: GuestMemory>(
        &mut self,
        mem: &M,
        req: &Request,
        to_file: bool,
    ) -> std::io::Result<()> {
        // The parser checked sector + length against the capacity.
        let offset = req.sector * SECTOR_SIZE;
        // One preadv/pwritev for the whole request over the guest memory
        // slices of every segment; segment by segment if any cannot be
        // mapped as slices.
        let access = if to_file {
            vm_memory::Permissions::Read
        } else {
            vm_memory::Permissions::Write
        };
        let mut slices = Vec::with_capacity(req.data.len());
        for &(addr, len) in &req.data {
            let Ok(iter) = mem.get_slices(addr, len as usize, access) else {
                return self.transfer_by_segment(mem, req, offset, to_file);
            };
            for s in iter {
                match s {
                    Ok(s) => slices.push(s),
                    Err(_) => return self.transfer_by_segment(mem, req, offset, to_file),
                }
            }
        }
        vectored(&self.file, &slices, offset, to_file)
    }

    fn transfer_by_segment<M: GuestMemory>(
        &mut self,
        mem: &M,
        req: &Request,
        offset: u64,
        to_file: bool,
    ) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        for &(addr, len) in &req.data {
            let len = len as usize;
            let r = if to_file {
                mem.write_all_volatile_to(addr, &mut self.file, len)
            } else {
                mem.read_exact_volatile_from(addr, &mut self.file, len)
            };
            r.map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

/// Moves the bytes of `slices` to (`to_file`) or from the file at `offset`
/// with as few `pwritev`/`preadv` calls as the kernel allows. A read that
/// ends early (the file shrank under us) is an error, never a partial
/// success.
fn vectored<B: BitmapSlice>(
    file: &File,
    slices: &[VolatileSlice<'_, B>],
    mut offset: u64,
    to_file: bool,
) -> std::io::Result<()> {
    // The guards keep the pointers valid for as long as they are used.
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
    let mut iovs: Vec<libc::iovec> = guards
        .iter()
        .zip(slices)
        .filter(|(_, s)| !s.is_empty())
        .map(|(g, s)| libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: s.len(),
        })
        .collect();
    let mut first = 0;
    while first < iovs.len() {
        let batch = &iovs[first..iovs.len().min(first + 1024)];
        let off =
            libc::off_t::try_from(offset).map_err(|_| std::io::Error::other("offset too large"))?;
        // SAFETY: every iovec points into guest memory that vm-memory
        // checked (get_slice) and that stays mapped while the guards live;
        // the kernel reads or writes at most iov_len bytes of each.
        let n = unsafe {
            if to_file {
                libc::pwritev(
                    file.as_raw_fd(),
                    batch.as_ptr(),
                    batch.len() as libc::c_int,
                    off,
                )
            } else {
                libc::preadv(
                    file.as_raw_fd(),
                    batch.as_ptr(),
                    batch.len() as libc::c_int,
                    off,
                )
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut n = n as usize;
        offset += n as u64;
        while n > 0 && first < iovs.len() {
            let iov = &mut iovs[first];
            if n >= iov.iov_len {
                n -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing within the same iovec's buffer.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(n) }.cast();
                iov.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}
