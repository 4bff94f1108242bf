//! Guest RAM. Each region is an anonymous private mapping aligned to 2 MiB
//! so that transparent huge pages can back it *and* KVM can map those huge
//! pages into the guest (it needs guest-physical and host-virtual addresses
//! congruent modulo 2 MiB). Unaligned memory costs thousands of extra
//! nested page faults per boot, which is the dominant boot cost under nested
//! virtualization. Memory is never pre-faulted and is kept out of core dumps.

use std::io;

use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

const HUGE_PAGE: usize = 2 << 20;

/// Errors creating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap failed.
    #[error("mapping {size} bytes of guest RAM: {err}")]
    Map {
        /// Bytes asked for.
        size: usize,
        /// Cause.
        err: io::Error,
    },
    /// vm-memory refused the regions.
    #[error("building guest memory: {0}")]
    Build(String),
}

/// The guest's RAM: owns the mappings, lends them out as a `GuestMemoryMmap`.
pub struct GuestRam {
    mem: GuestMemoryMmap,
    /// (host address, size) of each mapping, unmapped on drop.
    mappings: Vec<(usize, usize)>,
}

const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

fn map_aligned(size: usize) -> Result<usize, MemoryError> {
    let map_err = |err| MemoryError::Map { size, err };
    let total = size
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| map_err(io::Error::from_raw_os_error(libc::ENOMEM)))?;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; it
    // aliases nothing.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), total, PROT, FLAGS, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(map_err(io::Error::last_os_error()));
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    let tail = total - head - size;
    // SAFETY: head and tail are the unused ends of the mapping made above;
    // nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
        // Advisory: huge pages where possible, and no guest memory in core
        // dumps of the VMM.
        libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_DONTDUMP);
    }
    Ok(aligned)
}

impl GuestRam {
    /// Maps `regions` (guest address, size).
    pub fn new(regions: &[(GuestAddress, usize)]) -> Result<Self, MemoryError> {
        let mut ram = GuestRam {
            mem: GuestMemoryMmap::default(),
            mappings: Vec::with_capacity(regions.len()),
        };
        let mut built = Vec::with_capacity(regions.len());
        for &(guest, size) in regions {
            let host = map_aligned(size)?;
            ram.mappings.push((host, size));
            // SAFETY: `host..host+size` is the live mapping just created with
            // exactly these protection and flags; `ram` owns it and outlives
            // the region objects (they live in `ram.mem`).
            let region = unsafe { MmapRegion::<()>::build_raw(host as *mut u8, size, PROT, FLAGS) }
                .map_err(|e| MemoryError::Build(e.to_string()))?;
            let region = GuestRegionMmap::new(region, guest)
                .ok_or_else(|| MemoryError::Build("region overflows".into()))?;
            built.push(region);
        }
        ram.mem =
            GuestMemoryMmap::from_regions(built).map_err(|e| MemoryError::Build(e.to_string()))?;
        Ok(ram)
    }

    /// The guest memory, for vm-memory's checked accessors.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // Drop the non-owning region objects first, then the mappings.
        self.mem = GuestMemoryMmap::default();
        for &(host, size) in &self.mappings {
            // SAFETY: each entry is a mapping this struct created and that
            // nothing references any more.
            unsafe { libc::munmap(host as *mut libc::c_void, size) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn regions_are_huge_page_aligned_and_usable() {
        let ram =
            GuestRam::new(&[(GuestAddress(0), 8 << 20), (GuestAddress(1 << 32), 4 << 20)]).unwrap();
        for (g, _) in [(GuestAddress(0), 0), (GuestAddress(1 << 32), 0)] {
            let host = ram.memory().get_host_address(g).unwrap() as usize;
            assert_eq!(host % HUGE_PAGE, 0);
        }
        ram.memory()
            .write_obj(0xdead_beef_u32, GuestAddress((1 << 32) + 16))
            .unwrap();
        assert_eq!(
            ram.memory()
                .read_obj::<u32>(GuestAddress((1 << 32) + 16))
                .unwrap(),
            0xdead_beef
        );
        assert!(ram.memory().read_obj::<u32>(GuestAddress(8 << 20)).is_err());
    }
}
