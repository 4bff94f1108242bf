//! Tiny hand-written guests for VMM tests. They run on any KVM, including
//! this build host's `kvm_pvm`, which cannot boot Linux: a few instructions
//! that write to ports and reset. Each is wrapped in a minimal ELF64 so it
//! goes through the same loader as a real vmlinux.

#![allow(dead_code)]

use std::path::PathBuf;

/// Where tiny guests are loaded (and entered).
pub const LOAD_ADDR: u64 = 0x20_0000;

/// `mov dx, 0xcc0; mov al, code; out dx, al` (valid in 32- and 64-bit mode).
pub fn debug_port(code: u8) -> Vec<u8> {
    vec![0x66, 0xba, 0xc0, 0x0c, 0xb0, code, 0xee]
}

/// Writes `text` to COM1's transmit register, one `out` per byte.
pub fn serial_write(text: &[u8]) -> Vec<u8> {
    let mut v = vec![0x66, 0xba, 0xf8, 0x03];
    for &b in text {
        v.extend_from_slice(&[0xb0, b, 0xee]);
    }
    v
}

/// `mov al, 0xfe; out 0x64, al` (i8042 reset), then `hlt; jmp hlt`.
pub fn i8042_reset() -> Vec<u8> {
    vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]
}

/// 64-bit only: copies `msg` to `dest` with `rep movsb`. The message is
/// placed right after this snippet and jumped over.
pub fn copy_to(dest: u64, msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    // jmp over the message
    v.extend_from_slice(&[0xe9]);
    v.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    let msg_at = v.len();
    v.extend_from_slice(msg);
    // lea rsi, [rip + disp32]
    let lea_end = v.len() + 7;
    let disp = msg_at as i64 - lea_end as i64;
    v.extend_from_slice(&[0x48, 0x8d, 0x35]);
    v.extend_from_slice(&(disp as i32).to_le_bytes());
    // mov rdi, imm64
    v.extend_from_slice(&[0x48, 0xbf]);
    v.extend_from_slice(&dest.to_le_bytes());
    // mov ecx, imm32
    v.push(0xb9);
    v.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    // rep movsb
    v.extend_from_slice(&[0xf3, 0xa4]);
    v
}

/// A minimal ELF64 executable: one PT_LOAD of `code` at `LOAD_ADDR` with
/// `memsz` bytes in memory, and, with `pvh`, a PT_NOTE carrying the PVH
/// entry point (XEN_ELFNOTE_PHYS32_ENTRY).
pub fn elf(code: &[u8], memsz: u64, pvh: bool) -> Vec<u8> {
    let phnum: u16 = if pvh { 2 } else { 1 };
    let code_off = 0x1000u64;
    let note_off = 0x800u64;
    let mut f = vec![0u8; code_off as usize];
    // ELF header
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    f[56..58].copy_from_slice(&phnum.to_le_bytes());
    let mut ph = |i: usize, ty: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
        let b = 64 + 56 * i;
        f[b..b + 4].copy_from_slice(&ty.to_le_bytes());
        f[b + 4..b + 8].copy_from_slice(&7u32.to_le_bytes());
        f[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
        f[b + 16..b + 24].copy_from_slice(&addr.to_le_bytes());
        f[b + 24..b + 32].copy_from_slice(&addr.to_le_bytes());
        f[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
        f[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
        f[b + 48..b + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    };
    ph(
        0,
        1,
        code_off,
        LOAD_ADDR,
        code.len() as u64,
        memsz.max(code.len() as u64),
    );
    if pvh {
        ph(1, 4, note_off, 0, 20, 20);
        let n = note_off as usize;
        f[n..n + 4].copy_from_slice(&4u32.to_le_bytes()); // namesz
        f[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes()); // descsz
        f[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        f[n + 12..n + 16].copy_from_slice(b"Xen\0");
        f[n + 16..n + 20].copy_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
    }
    f.extend_from_slice(code);
    f
}

/// Writes `bytes` to a file in `dir` and returns its path.
pub fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// Fails (never skips) when this host has no usable /dev/kvm.
pub fn require_kvm() {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert!(ok, "this test needs a usable /dev/kvm (any KVM, kvm_pvm included): run it as root on a KVM host");
}
