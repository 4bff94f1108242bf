//! Fuzzes virtio-vsock header decoding and the TX checks: any 44 bytes and
//! any claimed remaining length must decode and be judged without panic, and
//! an accepted header must respect the payload limit.
#![no_main]

use cocoon_vmm::devices::virtio::vsock::packet::{check_tx, Header, HDR_SIZE};
use cocoon_vmm::devices::virtio::vsock::MAX_PAYLOAD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < HDR_SIZE + 4 {
        return;
    }
    let mut hdr = [0u8; HDR_SIZE];
    hdr.copy_from_slice(&data[..HDR_SIZE]);
    let h = Header::parse(&hdr);
    assert_eq!(Header::parse(&h.to_bytes()), h);
    let rest = u32::from_le_bytes([
        data[HDR_SIZE],
        data[HDR_SIZE + 1],
        data[HDR_SIZE + 2],
        data[HDR_SIZE + 3],
    ]) as usize;
    if check_tx(&h, rest, 3).is_ok() {
        assert!(h.len <= MAX_PAYLOAD && h.len as usize <= rest);
    }
});
