//! Guest physical memory map. Everything the VMM writes before the first
//! instruction has a fixed home below 1 MiB; the kernel loads at its own
//! physical address (16 MiB for a vmlinux), the initramfs sits at the top of
//! low RAM, and a 64 KiB panic-log region (ramoops) sits above it.

use vm_memory::GuestAddress;

/// GDT used while entering the kernel.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the kernel installs its own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// Linux boot protocol zero page (`boot_params`); PVH and the zero page are
/// never used together.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Stack pointer for the 64-bit boot protocol.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Identity page tables for the 64-bit boot protocol: PML4, PDPT, 4 PDs.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories (0xb000..0xf000) mapping 4 GiB.
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// MP floating pointer, in the last KiB of base memory where Linux scans.
pub const MPTABLE_ADDR: u64 = 0x9fc00;
/// End of the RAM reported below 1 MiB (the rest is the legacy hole).
pub const EBDA_START: u64 = MPTABLE_ADDR;
/// Where RAM resumes above the legacy hole.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole below 4 GiB (IOAPIC, LAPIC, virtio-mmio devices).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// TSS for KVM's real-mode emulation on Intel (3 pages, must not be RAM).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Size of the ramoops region the guest kernel writes a panic log into.
pub const RAMOOPS_SIZE: u64 = 0x1_0000;

/// What an e820 / PVH memory map entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM.
    Ram,
    /// Reserved: RAM-backed but not for the kernel's allocator.
    Reserved,
}

/// One entry of the guest's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Kind.
    pub kind: MemoryKind,
}

/// The layout of one VM's memory, derived from its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Total guest RAM in bytes.
    pub mem_size: u64,
    /// End (exclusive) of the RAM below the MMIO hole.
    pub low_end: u64,
    /// Size of the RAM above 4 GiB (0 when it all fits below the hole).
    pub high_size: u64,
}

impl MemoryLayout {
    /// Lays out `mem_size` bytes of RAM (at least 2 MiB, page aligned).
    pub fn new(mem_size: u64) -> Self {
        let low_end = mem_size.min(MMIO_GAP_START);
        MemoryLayout {
            mem_size,
            low_end,
            high_size: mem_size - low_end,
        }
    }

    /// Host-mapped RAM regions: `[0, low_end)` and, for large VMs,
    /// `[4 GiB, 4 GiB + high_size)`.
    pub fn ram_regions(&self) -> Vec<(GuestAddress, usize)> {
        let mut v = vec![(GuestAddress(0), self.low_end as usize)];
        if self.high_size > 0 {
            v.push((GuestAddress(MMIO_GAP_END), self.high_size as usize));
        }
        v
    }

    /// The ramoops (panic log) region: the last 64 KiB of low RAM.
    pub fn ramoops(&self) -> (u64, u64) {
        (self.low_end - RAMOOPS_SIZE, RAMOOPS_SIZE)
    }

    /// Highest address (exclusive) the initramfs may end at.
    pub fn initrd_limit(&self) -> u64 {
        self.ramoops().0
    }

    /// The memory map shown to the guest (e820 or PVH memmap).
    pub fn memory_map(&self) -> Vec<MemoryMapEntry> {
        let (oops, oops_size) = self.ramoops();
        let mut v = vec![
            MemoryMapEntry {
                addr: 0,
                size: EBDA_START,
                kind: MemoryKind::Ram,
            },
            MemoryMapEntry {
                addr: HIMEM_START,
                size: oops - HIMEM_START,
                kind: MemoryKind::Ram,
            },
            MemoryMapEntry {
                addr: oops,
                size: oops_size,
                kind: MemoryKind::Reserved,
            },
        ];
        if self.high_size > 0 {
            v.push(MemoryMapEntry {
                addr: MMIO_GAP_END,
                size: self.high_size,
                kind: MemoryKind::Ram,
            });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vm_has_no_high_memory() {
        let l = MemoryLayout::new(128 << 20);
        assert_eq!(l.ram_regions(), vec![(GuestAddress(0), 128 << 20)]);
        let map = l.memory_map();
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[2],
            MemoryMapEntry {
                addr: (128 << 20) - RAMOOPS_SIZE,
                size: RAMOOPS_SIZE,
                kind: MemoryKind::Reserved
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == MemoryKind::Ram)
            .map(|e| e.size)
            .sum();
        assert!(ram > (127 << 20));
    }

    #[test]
    fn large_vm_skips_the_mmio_hole() {
        let l = MemoryLayout::new(4 << 30);
        assert_eq!(
            l.ram_regions(),
            vec![
                (GuestAddress(0), MMIO_GAP_START as usize),
                (GuestAddress(MMIO_GAP_END), (1 << 30) as usize)
            ]
        );
        assert_eq!(l.memory_map().last().unwrap().addr, MMIO_GAP_END);
    }
}
