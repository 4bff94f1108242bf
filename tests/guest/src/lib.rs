//! What the guest test program and the host-side tests agree on: a
//! deterministic byte pattern and a checksum, so 64 MiB can be compared
//! across the VM boundary by one printed number.

#![warn(missing_docs)]

/// FNV-1a, 64-bit: a streaming checksum.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// An endless deterministic byte stream (xorshift64*), seeded.
#[derive(Debug, Clone)]
pub struct Pattern(u64);

impl Pattern {
    /// A stream for `seed` (0 is remapped, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Pattern(seed.max(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The checksum of the first `len` bytes of pattern `seed`.
pub fn pattern_checksum(seed: u64, len: u64) -> u64 {
    let mut p = Pattern::new(seed);
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        p.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_chunking_does_not_matter() {
        let mut a = Pattern::new(7);
        let mut big = vec![0u8; 64];
        a.fill(&mut big);
        let mut b = Pattern::new(7);
        let (mut x, mut y) = (vec![0u8; 32], vec![0u8; 32]);
        b.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(big, [x, y].concat());
        assert_ne!(pattern_checksum(1, 4096), pattern_checksum(2, 4096));
    }
}
