//! Finds out whether a guest that reset had panicked. The guest kernel is
//! told (on its command line) to keep a ramoops log in a reserved region at
//! the top of low RAM; `panic()` writes its log there before rebooting. The
//! region is guest-written, so it is read with bounds and treated as
//! untrusted text: the worst a guest can do is fake its own panic.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing: ";
const DUMP_MARKER: &[u8] = b"Panic#";
const MAX_REASON: usize = 200;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Extracts the panic reason from a ramoops record, if it holds a panic.
pub fn parse_panic(record: &[u8]) -> Option<String> {
    if let Some(pos) = find(record, PANIC_MARKER) {
        let rest = &record[pos + PANIC_MARKER.len()..];
        let line: String = rest
            .iter()
            .take_while(|&&b| b != b'\n' && b != 0)
            .take(MAX_REASON)
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        return Some(line.trim().to_string());
    }
    find(record, DUMP_MARKER).map(|_| "no reason recorded".to_string())
}

/// Reads the ramoops region of `mem` and looks for a panic.
pub fn read_panic(mem: &GuestMemoryMmap, region: (u64, u64)) -> Option<String> {
    let mut buf = vec![0u8; region.1 as usize];
    mem.read_slice(&mut buf, GuestAddress(region.0)).ok()?;
    parse_panic(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_extracted_and_sanitised() {
        let rec = b"\0\0DBGC====1.2-D\nPanic#1 Part1\n<0>[ 1.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\x1b\n<4>[ 1.1] CPU: 0\n";
        assert_eq!(
            parse_panic(rec).as_deref(),
            Some("Attempted to kill init! exitcode=0x00000100?")
        );
    }

    #[test]
    fn clean_memory_is_no_panic() {
        assert_eq!(parse_panic(&[0u8; 4096]), None);
        assert_eq!(parse_panic(b""), None);
    }

    #[test]
    fn dump_without_reason_still_counts() {
        assert_eq!(
            parse_panic(b"Panic#1 Part1\n").as_deref(),
            Some("no reason recorded")
        );
    }

    #[test]
    fn reason_is_bounded() {
        let mut rec = PANIC_MARKER.to_vec();
        rec.extend(std::iter::repeat_n(b'a', 10_000));
        assert_eq!(parse_panic(&rec).map(|s| s.len()), Some(MAX_REASON));
    }
}
