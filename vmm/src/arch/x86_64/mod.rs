//! x86_64: guest physical layout, boot protocols (PVH and the 64-bit Linux
//! boot protocol), CPUID normalisation, MSRs, GDT/page tables and the MP
//! table. Nothing here talks to KVM except `regs`, `msr` and `cpuid`'s
//! appliers; the builders are pure so they can be unit-tested.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
