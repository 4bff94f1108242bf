//! Boot parameters handed to the kernel: the PVH start info with its memory
//! map and module list, or the Linux zero page with its e820 table.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{
    MemoryKind, MemoryLayout, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR,
    ZERO_PAGE_ADDR,
};

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const E820_MAX: usize = 128;

/// Where the initramfs was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Errors writing boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// linux-loader refused to write the parameters.
    #[error("writing boot parameters: {0}")]
    Write(#[from] linux_loader::configurator::Error),
    /// More memory map entries than the zero page holds.
    #[error("memory map has {0} entries, the zero page holds {E820_MAX}")]
    TooManyE820(usize),
}

fn e820_type(kind: MemoryKind) -> u32 {
    match kind {
        MemoryKind::Ram => E820_RAM,
        MemoryKind::Reserved => E820_RESERVED,
    }
}

/// Writes the PVH start info, memory map and module list.
pub fn write_pvh(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    initrd: Option<InitrdPlacement>,
) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = layout
        .memory_map()
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e820_type(e.kind),
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|i| {
            vec![hvm_modlist_entry {
                paddr: i.addr,
                size: i.size,
                ..Default::default()
            }]
        })
        .unwrap_or_default();
    if !modules.is_empty() {
        info.nr_modules = modules.len() as u32;
        info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem)?;
    Ok(())
}

/// Builds the zero page for the 64-bit boot protocol. `header` is the
/// bzImage's setup header, or `None` for a vmlinux.
pub fn zero_page(
    layout: &MemoryLayout,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
) -> Result<boot_params, BootError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = layout.memory_map();
    if map.len() > E820_MAX {
        return Err(BootError::TooManyE820(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e820_type(e.kind),
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page.
pub fn write_zero_page(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), BootError> {
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_has_e820_and_initrd() {
        let layout = MemoryLayout::new(256 << 20);
        let p = zero_page(
            &layout,
            None,
            10,
            Some(InitrdPlacement {
                addr: 0x800_0000,
                size: 0x1000,
            }),
        )
        .unwrap();
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.hdr.ramdisk_image }, 0x800_0000);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.e820_table[2].r#type }, E820_RESERVED);
    }

    #[test]
    fn pvh_start_info_is_written() {
        let layout = MemoryLayout::new(64 << 20);
        let mem = GuestMemoryMmap::<()>::from_ranges(&layout.ram_regions()).unwrap();
        write_pvh(
            &mem,
            &layout,
            Some(InitrdPlacement {
                addr: 0x200_0000,
                size: 42,
            }),
        )
        .unwrap();
        use vm_memory::Bytes;
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(
            (info.magic, info.nr_modules, info.memmap_entries),
            (XEN_HVM_START_MAGIC, 1, 3)
        );
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!((module.paddr, module.size), (0x200_0000, 42));
    }
}
