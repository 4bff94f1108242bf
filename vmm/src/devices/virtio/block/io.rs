//! The block backend: a raw image file. Executes parsed requests against
//! guest memory through vm-memory's volatile accessors. A read-only disk is
//! opened read-only, so even a bug here could not modify the file.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use vm_memory::{Bytes, GuestMemory};

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
