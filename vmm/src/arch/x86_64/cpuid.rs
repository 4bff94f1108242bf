//! CPUID normalisation. KVM reports what the host can virtualise; each vCPU
//! is then told who it is (APIC id), how many siblings it has (a single
//! socket of N single-threaded cores) and that it runs under a hypervisor.
//! The normalisation is a pure function over the entry list so it can be
//! tested without KVM.

use kvm_bindings::kvm_cpuid_entry2;

/// CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD or HygonGenuine.
    Amd,
    /// Anything else.
    Other,
}

/// Reads the vendor string from leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(e) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&e.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&e.edx.to_le_bytes());
    s[8..12].copy_from_slice(&e.ecx.to_le_bytes());
    match &s {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Rewrites `entries` for vCPU `id` of `count` (ids are APIC ids).
pub fn normalize(entries: &mut [kvm_cpuid_entry2], id: u32, count: u32) {
    let vendor = vendor(entries);
    let core_bits = bits_for(count);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX: [31:24] initial APIC id, [23:16] logical processors
                // per package, [15:8] CLFLUSH line size in qwords.
                e.ebx = (id << 24) | ((count & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                // Deterministic cache parameters: N cores per package, each
                // cache private to one thread except the last level.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 {
                    count.saturating_sub(1)
                } else {
                    0
                };
                e.eax = (e.eax & 0x3ff)
                    | ((sharing & 0xfff) << 14)
                    | ((count.saturating_sub(1) & 0x3f) << 26);
            }
            0xb | 0x1f => {
                // Extended topology: level 0 = SMT (1 thread), level 1 =
                // core (N cores); EDX = x2APIC id at every level.
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
                e.edx = id;
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX: [15:12] APIC id bits for cores, [7:0] cores - 1.
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (count.saturating_sub(1) & 0xff);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                // Extended APIC id; one thread per core; core id; node 0.
                e.eax = id;
                e.ebx = id & 0xff;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn amd_leaf0() -> kvm_cpuid_entry2 {
        let s = b"AuthenticAMD";
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        kvm_cpuid_entry2 {
            function: 0,
            ebx: w(0),
            edx: w(4),
            ecx: w(8),
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_and_hypervisor_bit() {
        let mut v = vec![entry(1, 0)];
        normalize(&mut v, 3, 4);
        assert_eq!(v[0].ebx >> 24, 3);
        assert_eq!((v[0].ebx >> 16) & 0xff, 4);
        assert_ne!(v[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(v[0].edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_describes_n_cores() {
        let mut v = vec![entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        normalize(&mut v, 2, 3);
        assert_eq!((v[0].ebx, v[0].ecx >> 8, v[0].edx), (1, LEVEL_TYPE_SMT, 2));
        assert_eq!((v[1].eax, v[1].ebx, v[1].ecx >> 8), (2, 3, LEVEL_TYPE_CORE));
        assert_eq!((v[2].ebx, v[2].ecx >> 8), (0, 0));
    }

    #[test]
    fn amd_core_count() {
        let mut v = vec![amd_leaf0(), entry(0x8000_0008, 0), entry(0x8000_001e, 0)];
        assert_eq!(vendor(&v), Vendor::Amd);
        normalize(&mut v, 1, 2);
        assert_eq!(v[1].ecx & 0xff, 1);
        assert_eq!((v[1].ecx >> 12) & 0xf, 1);
        assert_eq!(v[2].eax, 1);
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5)
            ],
            [0, 1, 2, 2, 3]
        );
    }
}
