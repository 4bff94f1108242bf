//! Boot-time model-specific registers, limited to those KVM says it
//! supports so a missing one on some host is skipped rather than fatal.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default type write-back.
const MTRR_DEF_TYPE_WB_ENABLED: u64 = (1 << 11) | 6;

/// Errors while setting MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The FAM wrapper could not be built.
    #[error("building the MSR list")]
    Build,
    /// KVM_SET_MSRS failed or set fewer entries than asked.
    #[error("KVM_SET_MSRS set {set} of {wanted} MSRs: {err}")]
    Set {
        /// Entries set.
        set: usize,
        /// Entries asked for.
        wanted: usize,
        /// Error text.
        err: String,
    },
}

/// The MSRs a vCPU boots with, as (index, value).
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_WB_ENABLED),
    ]
}

/// Sets the boot MSRs that appear in `supported` (KVM's MSR index list).
pub fn setup_msrs(vcpu: &VcpuFd, supported: &[u32]) -> Result<(), MsrError> {
    let entries: Vec<kvm_msr_entry> = boot_msrs()
        .into_iter()
        .filter(|(i, _)| supported.contains(i))
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| MsrError::Build)?;
    match vcpu.set_msrs(&msrs) {
        Ok(n) if n == entries.len() => Ok(()),
        Ok(n) => Err(MsrError::Set {
            set: n,
            wanted: entries.len(),
            err: "short write".into(),
        }),
        Err(e) => Err(MsrError::Set {
            set: 0,
            wanted: entries.len(),
            err: e.to_string(),
        }),
    }
}
