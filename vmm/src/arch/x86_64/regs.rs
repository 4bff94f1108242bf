//! Boot-time register state of a vCPU: general registers, segments and
//! control registers for PVH (32-bit protected mode, paging off) or the
//! 64-bit Linux boot protocol (long mode on identity page tables), the FPU,
//! and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt;
use super::layout::{
    BOOT_STACK_ADDR, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR, PVH_INFO_ADDR,
    ZERO_PAGE_ADDR,
};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode at `entry`, `%ebx` = start info.
    Pvh {
        /// Entry point.
        entry: u64,
    },
    /// 64-bit Linux boot protocol: long mode at `entry`, `%rsi` = zero page.
    Linux64 {
        /// Entry point.
        entry: u64,
    },
}

/// Errors while setting up registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing the GDT or page tables into guest memory failed.
    #[error("writing boot tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A KVM register ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
}

/// Writes the boot GDT, an empty IDT and (for the 64-bit protocol) identity
/// page tables for the first 4 GiB into guest memory. Shared by all vCPUs.
pub fn write_boot_tables(mem: &GuestMemoryMmap, entry: BootEntry) -> Result<(), RegsError> {
    let long_mode = matches!(entry, BootEntry::Linux64 { .. });
    for (i, d) in gdt::boot_gdt(long_mode).iter().enumerate() {
        mem.write_obj(*d, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    if long_mode {
        mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))?;
        for pd in 0..4u64 {
            let pd_addr = PD_ADDR + pd * 0x1000;
            mem.write_obj(pd_addr | 0x3, GuestAddress(PDPT_ADDR + pd * 8))?;
            let mut table = [0u64; 512];
            for (i, e) in table.iter_mut().enumerate() {
                // 2 MiB pages: present, writable, page size.
                *e = ((pd * 512 + i as u64) << 21) | 0x83;
            }
            for (i, e) in table.iter().enumerate() {
                mem.write_obj(*e, GuestAddress(pd_addr + 8 * i as u64))?;
            }
        }
    }
    Ok(())
}

/// Special registers for `entry`, starting from KVM's current values.
pub fn boot_sregs(mut sregs: kvm_sregs, entry: BootEntry) -> kvm_sregs {
    let long_mode = matches!(entry, BootEntry::Linux64 { .. });
    let table = gdt::boot_gdt(long_mode);
    let code = gdt::segment(table[gdt::CODE_INDEX as usize], gdt::CODE_INDEX);
    let data = gdt::segment(table[gdt::DATA_INDEX as usize], gdt::DATA_INDEX);
    let tss = gdt::segment(table[gdt::TSS_INDEX as usize], gdt::TSS_INDEX);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    if long_mode {
        sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
    } else {
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
    sregs
}

/// General registers for `entry`.
pub fn boot_regs(entry: BootEntry) -> kvm_regs {
    match entry {
        BootEntry::Pvh { entry } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: PVH_INFO_ADDR,
            ..Default::default()
        },
        BootEntry::Linux64 { entry } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK_ADDR,
            rbp: BOOT_STACK_ADDR,
            rsi: ZERO_PAGE_ADDR,
            ..Default::default()
        },
    }
}

/// Applies the boot register state to `vcpu`. Only the boot processor is
/// given an entry point; application processors wait for INIT/SIPI in the
/// in-kernel LAPIC.
pub fn setup_vcpu_regs(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), RegsError> {
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| RegsError::Kvm("KVM_GET_SREGS", e))?;
    vcpu.set_sregs(&boot_sregs(sregs, entry))
        .map_err(|e| RegsError::Kvm("KVM_SET_SREGS", e))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(|e| RegsError::Kvm("KVM_SET_REGS", e))?;
    Ok(())
}

/// Sets the FPU to its power-on state (x87 control word, MXCSR).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| RegsError::Kvm("KVM_SET_FPU", e))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(regs: &[std::os::raw::c_char], off: usize) -> u32 {
    let b = |i: usize| regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char], off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = *byte as std::os::raw::c_char;
    }
}

/// Wires LINT0 to ExtINT and LINT1 to NMI, as firmware does.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| RegsError::Kvm("KVM_GET_LAPIC", e))?;
    let set_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(&lapic.regs, APIC_LVT0);
    set_lapic_reg(&mut lapic.regs, APIC_LVT0, set_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(&lapic.regs, APIC_LVT1);
    set_lapic_reg(&mut lapic.regs, APIC_LVT1, set_mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&lapic)
        .map_err(|e| RegsError::Kvm("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_enters_protected_mode_without_paging() {
        let s = boot_sregs(kvm_sregs::default(), BootEntry::Pvh { entry: 0x100_0000 });
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr0 & CR0_PE, 1);
        assert_eq!((s.cs.db, s.cs.l), (1, 0));
        let r = boot_regs(BootEntry::Pvh { entry: 0x100_0000 });
        assert_eq!((r.rip, r.rbx), (0x100_0000, PVH_INFO_ADDR));
    }

    #[test]
    fn linux64_enters_long_mode() {
        let s = boot_sregs(
            kvm_sregs::default(),
            BootEntry::Linux64 { entry: 0x100_0200 },
        );
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!((s.cs.db, s.cs.l), (0, 1));
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(
            boot_regs(BootEntry::Linux64 { entry: 1 }).rsi,
            ZERO_PAGE_ADDR
        );
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&mem, BootEntry::Linux64 { entry: 0 }).unwrap();
        let last: u64 = mem
            .read_obj(GuestAddress(PD_ADDR + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, (0xffe0_0000) | 0x83);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 24)).unwrap();
        assert_eq!(pdpt3, (PD_ADDR + 0x3000) | 3);
    }
}
