//! Puts the kernel, the initramfs and the command line into guest memory.
//! Format detection, initramfs placement and command-line assembly are pure
//! functions; only `load_kernel` and `load_initrd` read files.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::bootparam::setup_header;
use linux_loader::elf::{Elf64_Ehdr, Elf64_Phdr, PT_LOAD};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::boot::InitrdPlacement;
use crate::arch::x86_64::layout::{MemoryLayout, HIMEM_START};
use crate::arch::x86_64::regs::BootEntry;
use crate::config::MAX_CMDLINE_LEN;

const PAGE: u64 = 4096;
/// Offset of the 64-bit entry point in a bzImage's protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// A kernel needs room beyond its image for early allocations.
const MIN_FREE_AFTER_KERNEL: u64 = 4 << 20;

/// Errors loading the guest's boot images.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel file could not be opened or read.
    #[error("cannot read kernel {path}: {err}")]
    KernelRead {
        /// Path given.
        path: String,
        /// Cause.
        err: std::io::Error,
    },
    /// The kernel file is neither ELF nor bzImage.
    #[error("{0} is neither an ELF vmlinux nor a bzImage")]
    NotAKernel(String),
    /// The ELF is malformed.
    #[error("{path} is not a usable x86_64 ELF kernel: {why}")]
    BadElf {
        /// Path given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// linux-loader failed to load the image.
    #[error("loading kernel {path}: {err}")]
    Load {
        /// Path given.
        path: String,
        /// Cause.
        err: linux_loader::loader::Error,
    },
    /// The initramfs could not be opened or read.
    #[error("cannot read initramfs {path}: {err}")]
    InitrdRead {
        /// Path given.
        path: String,
        /// Cause.
        err: std::io::Error,
    },
    /// Kernel and initramfs do not fit in guest memory.
    #[error("guest memory of {have_mib} MiB is too small for the kernel and initramfs (needs at least {need_mib} MiB)")]
    MemoryTooSmall {
        /// Memory configured.
        have_mib: u64,
        /// Memory needed.
        need_mib: u64,
    },
    /// The assembled command line is too long for the kernel.
    #[error("kernel command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong {
        /// Length including the VMM's own parameters.
        len: usize,
        /// Limit (excluding the NUL).
        max: usize,
    },
    /// Writing to guest memory failed.
    #[error("writing to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Kernel image formats we boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF (`vmlinux`).
    Elf,
    /// Compressed `bzImage`.
    BzImage,
}

/// Recognises a kernel from its first 0x210 bytes.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.len() >= 4 && &head[..4] == b"\x7fELF" {
        Some(KernelFormat::Elf)
    } else if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// Where the kernel was loaded and how to enter it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Format of the image.
    pub format: KernelFormat,
    /// Entry protocol and address.
    pub entry: BootEntry,
    /// First byte after the kernel (including its bss / decompression room).
    pub end: u64,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
}

fn mib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Highest physical address the ELF's loadable segments reach.
fn elf_extent(file: &mut File, path: &str) -> Result<u64, LoadError> {
    let bad = |why: &str| LoadError::BadElf {
        path: path.to_string(),
        why: why.to_string(),
    };
    let io = |err| LoadError::KernelRead {
        path: path.to_string(),
        err,
    };
    let mut ehdr = Elf64_Ehdr::default();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_exact(ehdr.as_mut_slice())
        .map_err(|_| bad("truncated ELF header"))?;
    if ehdr.e_phnum == 0 || ehdr.e_phnum > 64 {
        return Err(bad("implausible program header count"));
    }
    if usize::from(ehdr.e_phentsize) != std::mem::size_of::<Elf64_Phdr>() {
        return Err(bad("not a 64-bit ELF"));
    }
    file.seek(SeekFrom::Start(ehdr.e_phoff)).map_err(io)?;
    let mut end = 0u64;
    for _ in 0..ehdr.e_phnum {
        let mut ph = Elf64_Phdr::default();
        file.read_exact(ph.as_mut_slice())
            .map_err(|_| bad("truncated program headers"))?;
        if ph.p_type == PT_LOAD {
            let seg_end = ph
                .p_paddr
                .checked_add(ph.p_memsz)
                .ok_or_else(|| bad("segment address overflows"))?;
            end = end.max(seg_end);
        }
    }
    if end == 0 {
        return Err(bad("no loadable segments"));
    }
    Ok(end)
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    path: &Path,
) -> Result<LoadedKernel, LoadError> {
    let name = path.display().to_string();
    let io = |err| LoadError::KernelRead {
        path: name.clone(),
        err,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut head = [0u8; 0x210];
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    let format = detect_format(&head[..n]).ok_or_else(|| LoadError::NotAKernel(name.clone()))?;
    let too_small = |need: u64| LoadError::MemoryTooSmall {
        have_mib: layout.mem_size >> 20,
        need_mib: mib_ceil(need),
    };
    let loaded = match format {
        KernelFormat::Elf => {
            let extent = elf_extent(&mut file, &name)?;
            if extent.saturating_add(MIN_FREE_AFTER_KERNEL) > layout.initrd_limit() {
                return Err(too_small(extent.saturating_add(
                    MIN_FREE_AFTER_KERNEL + (layout.mem_size - layout.initrd_limit()),
                )));
            }
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(
                |err| LoadError::Load {
                    path: name.clone(),
                    err,
                },
            )?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => BootEntry::Pvh { entry: addr.0 },
                _ => BootEntry::Linux64 {
                    entry: r.kernel_load.0,
                },
            };
            LoadedKernel {
                format,
                entry,
                end: r.kernel_end.max(extent),
                setup_header: None,
            }
        }
        KernelFormat::BzImage => {
            let size = file.metadata().map_err(io)?.len();
            if size.saturating_add(HIMEM_START + MIN_FREE_AFTER_KERNEL) > layout.initrd_limit() {
                return Err(too_small(
                    size.saturating_add(HIMEM_START + MIN_FREE_AFTER_KERNEL),
                ));
            }
            let r = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(
                |err| LoadError::Load {
                    path: name.clone(),
                    err,
                },
            )?;
            let hdr = r.setup_header;
            // The decompressor needs init_size bytes from the load address.
            let init_size = hdr.map(|h| u64::from(h.init_size)).unwrap_or(0);
            let end = r.kernel_end.max(r.kernel_load.0.saturating_add(init_size));
            if end.saturating_add(MIN_FREE_AFTER_KERNEL) > layout.initrd_limit() {
                return Err(too_small(end.saturating_add(
                    MIN_FREE_AFTER_KERNEL + (layout.mem_size - layout.initrd_limit()),
                )));
            }
            LoadedKernel {
                format,
                entry: BootEntry::Linux64 {
                    entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                },
                end,
                setup_header: hdr,
            }
        }
    };
    Ok(loaded)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Picks the initramfs address: as high as possible below `limit` (and
/// `addr_max`, the kernel's own ceiling), page aligned, above the kernel.
pub fn place_initrd(
    layout: &MemoryLayout,
    kernel_end: u64,
    size: u64,
    addr_max: Option<u64>,
) -> Result<InitrdPlacement, LoadError> {
    let mut limit = layout.initrd_limit();
    if let Some(max) = addr_max {
        limit = limit.min(max.saturating_add(1));
    }
    let floor = kernel_end
        .saturating_add(MIN_FREE_AFTER_KERNEL)
        .saturating_add(PAGE - 1)
        / PAGE
        * PAGE;
    let too_small = || LoadError::MemoryTooSmall {
        have_mib: layout.mem_size >> 20,
        need_mib: mib_ceil(
            floor
                .saturating_add(size)
                .saturating_add(layout.mem_size - layout.initrd_limit()),
        ),
    };
    let addr = limit.checked_sub(size).ok_or_else(too_small)? / PAGE * PAGE;
    if addr < floor {
        return Err(too_small());
    }
    Ok(InitrdPlacement { addr, size })
}

/// Copies the initramfs file into guest memory at `at`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    file: &mut File,
    path: &Path,
    at: InitrdPlacement,
) -> Result<(), LoadError> {
    use vm_memory::Bytes;
    let name = path.display().to_string();
    file.seek(SeekFrom::Start(0))
        .map_err(|err| LoadError::InitrdRead {
            path: name.clone(),
            err,
        })?;
    mem.read_exact_volatile_from(GuestAddress(at.addr), file, at.size as usize)
        .map_err(|e| LoadError::InitrdRead {
            path: name,
            err: std::io::Error::other(e.to_string()),
        })?;
    Ok(())
}

/// Opens the initramfs and returns it with its size.
pub fn open_initrd(path: &Path) -> Result<(File, u64), LoadError> {
    let err = |err| LoadError::InitrdRead {
        path: path.display().to_string(),
        err,
    };
    let file = File::open(path).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    if size == 0 {
        return Err(err(std::io::Error::other("file is empty")));
    }
    Ok((file, size))
}

/// The kernel command line: what the VMM needs, then the user's part.
pub fn build_cmdline(
    console: bool,
    ramoops: (u64, u64),
    devices: &[(u64, u32)],
    user: &str,
) -> Result<String, LoadError> {
    let (oops_addr, oops_size) = ramoops;
    let mut parts: Vec<String> = vec![
        // Reset through the i8042 (one port write), immediately on panic.
        "reboot=k".into(),
        "panic=-1".into(),
        // The IOAPIC timer check waits for ticks; the PIT wiring is known.
        "no_timer_check".into(),
    ];
    if console {
        parts.push("console=ttyS0".into());
    } else {
        // No UART probing at boot: each register access is a VM exit.
        parts.push("8250.nr_uarts=0".into());
    }
    parts.push(format!(
        "ramoops.mem_address={oops_addr:#x} ramoops.mem_size={oops_size:#x} ramoops.record_size={oops_size:#x} \
         ramoops.console_size=0 ramoops.ftrace_size=0 ramoops.pmsg_size=0 ramoops.mem_type=2"
    ));
    for (base, irq) in devices {
        parts.push(format!("virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    if !user.trim().is_empty() {
        parts.push(user.trim().to_string());
    }
    let line = parts.join(" ");
    if line.len() >= MAX_CMDLINE_LEN {
        return Err(LoadError::CmdlineTooLong {
            len: line.len(),
            max: MAX_CMDLINE_LEN - 1,
        });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised() {
        assert_eq!(detect_format(b"\x7fELF\x02\x01"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"#!/bin/sh\n"), None);
        assert_eq!(detect_format(&[]), None);
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let l = MemoryLayout::new(128 << 20);
        let p = place_initrd(&l, 20 << 20, 1_000_001, None).unwrap();
        assert_eq!(p.addr % PAGE, 0);
        assert!(p.addr + p.size <= l.initrd_limit());
        assert!(p.addr >= 24 << 20);
    }

    #[test]
    fn initrd_that_does_not_fit_is_refused() {
        let l = MemoryLayout::new(32 << 20);
        let e = place_initrd(&l, 20 << 20, 16 << 20, None).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::MemoryTooSmall {
                    have_mib: 32,
                    need_mib: 41
                }
            ),
            "{e}"
        );
        assert!(place_initrd(&l, 20 << 20, u64::MAX, None).is_err());
    }

    #[test]
    fn initrd_respects_the_kernels_ceiling() {
        let l = MemoryLayout::new(1 << 30);
        let p = place_initrd(&l, 20 << 20, 4096, Some(0x1fff_ffff)).unwrap();
        assert_eq!(p.addr + p.size, 0x2000_0000);
    }

    #[test]
    fn cmdline_carries_vmm_parameters_and_user_text() {
        let c = build_cmdline(
            false,
            (0x7ff_0000, 0x1_0000),
            &[(0xd000_0000, 5)],
            "quiet cocoon.mode=summary",
        )
        .unwrap();
        assert!(c.contains("virtio_mmio.device=4K@0xd0000000:5"));
        assert!(c.contains("8250.nr_uarts=0"));
        assert!(c.contains("ramoops.mem_address=0x7ff0000"));
        assert!(c.ends_with("quiet cocoon.mode=summary"));
        assert!(build_cmdline(true, (0, 0), &[], "")
            .unwrap()
            .contains("console=ttyS0"));
    }

    #[test]
    fn long_cmdline_is_refused() {
        let e = build_cmdline(false, (0, 0), &[], &"x".repeat(2000)).unwrap_err();
        assert!(
            matches!(e, LoadError::CmdlineTooLong { max: 2047, .. }),
            "{e}"
        );
    }
}
