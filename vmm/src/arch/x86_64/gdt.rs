//! Segment descriptors for the boot GDT and their KVM segment form.

use kvm_bindings::kvm_segment;

/// Selector index of the code segment.
pub const CODE_INDEX: u8 = 1;
/// Selector index of the data segment.
pub const DATA_INDEX: u8 = 2;
/// Selector index of the TSS.
pub const TSS_INDEX: u8 = 3;

/// Flags: 64-bit code (L), present, ring 0, execute/read, accessed, 4 KiB granularity.
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Flags: 32-bit code (D/B), present, ring 0, execute/read, accessed, 4 KiB granularity.
pub const CODE32_FLAGS: u16 = 0xc09b;
/// Flags: 32-bit data, present, ring 0, read/write, accessed, 4 KiB granularity.
pub const DATA_FLAGS: u16 = 0xc093;
/// Flags: present busy 32-bit TSS.
pub const TSS_FLAGS: u16 = 0x808b;

/// Encodes a GDT descriptor from flags (type/attribute bits as in the
/// second dword, bits 8..16 and 20..24), base and limit.
pub fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The boot GDT: null, code, data, TSS.
pub fn boot_gdt(long_mode: bool) -> [u64; 4] {
    let code = if long_mode {
        CODE64_FLAGS
    } else {
        CODE32_FLAGS
    };
    [
        0,
        descriptor(code, 0, 0xfffff),
        descriptor(DATA_FLAGS, 0, 0xfffff),
        descriptor(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// The hidden segment state KVM needs for descriptor `entry` at `index`.
pub fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = bit(55);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = bit(47);
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_segment_round_trips() {
        let d = descriptor(CODE64_FLAGS, 0, 0xfffff);
        assert_eq!(d, 0x00af_9b00_0000_ffff);
        let s = segment(d, CODE_INDEX);
        assert_eq!(
            (s.base, s.limit, s.selector, s.type_, s.l, s.db, s.g, s.present),
            (0, 0xffff_ffff, 8, 0xb, 1, 0, 1, 1)
        );
    }

    #[test]
    fn base_bits_are_split_correctly() {
        let d = descriptor(DATA_FLAGS, 0x1234_5678, 0xabcde);
        let s = segment(d, DATA_INDEX);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcd_efff);
    }
}
