//! virtio-net backed by an existing TAP device: one receive and one
//! transmit queue, a MAC address in config space, mergeable receive
//! buffers, EVENT_IDX notification suppression, and checksum/TSO offloads
//! in both directions when the TAP accepts them (the 12-byte
//! `virtio_net_hdr_v1` goes through the TAP unchanged). No control queue,
//! no multiqueue, no UFO.
//!
//! Frames move without a copy in the VMM where possible: TX with one
//! `writev` from guest memory, RX with one `readv` into the guest buffers
//! the device holds (`rx.rs`). With `vhost=on` they do not pass through
//! the VMM at all: the host kernel's vhost-net moves them (`vhost.rs`).
//!
//! Flow control: frames are read from the TAP only while the guest has
//! receive buffers; when it runs out the TAP is dropped from the event loop
//! until the guest notifies the receive queue again. A frame the TAP will
//! not take on transmit is dropped and counted, never retried in a loop.

pub mod device;
pub mod event_handler;
pub mod request;
pub mod rx;
pub mod tap;
pub mod vhost;

use std::fmt;

pub use device::{Net, NetConfig, NetError, NetMetrics};

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start,
/// csum_offset, num_buffers.
pub const VNET_HDR_LEN: usize = 12;
/// Largest Ethernet frame carried: a 64 KiB (GSO) packet plus an Ethernet
/// header with a VLAN tag.
pub const MAX_FRAME_LEN: usize = (64 << 10) + 18;
/// Smallest Ethernet frame the TAP takes (a bare Ethernet header).
pub const MIN_FRAME_LEN: usize = 14;

/// An Ethernet MAC address the guest may own: unicast and not all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr([u8; 6]);

/// Why a MAC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated pairs of hex digits.
    #[error("invalid MAC address '{0}': expected six hex pairs like 02:00:00:00:00:01")]
    Syntax(String),
    /// The group bit is set.
    #[error("MAC address '{0}' is multicast: the low bit of the first byte must be 0")]
    Multicast(String),
    /// 00:00:00:00:00:00.
    #[error("MAC address '{0}' is all zero")]
    Zero(String),
}

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` (hex, either case) and checks it is a
    /// unicast, non-zero address.
    pub fn parse(s: &str) -> Result<MacAddr, MacError> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for b in bytes.iter_mut() {
            let p = parts.next().ok_or_else(|| MacError::Syntax(s.into()))?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacError::Syntax(s.into()));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| MacError::Syntax(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacError::Syntax(s.into()));
        }
        MacAddr::from_bytes(bytes).map_err(|e| match e {
            MacError::Multicast(_) => MacError::Multicast(s.into()),
            MacError::Zero(_) => MacError::Zero(s.into()),
            other => other,
        })
    }

    /// Checks raw bytes.
    pub fn from_bytes(bytes: [u8; 6]) -> Result<MacAddr, MacError> {
        let mac = MacAddr(bytes);
        if bytes[0] & 1 != 0 {
            return Err(MacError::Multicast(mac.to_string()));
        }
        if bytes == [0; 6] {
            return Err(MacError::Zero(mac.to_string()));
        }
        Ok(mac)
    }

    /// A locally administered unicast address derived from `name` (the
    /// TAP's name), so a VM gets the same MAC on every start without
    /// configuration: 02 followed by five bytes of a hash of the name.
    pub fn derived(name: &str) -> MacAddr {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let v = h.to_le_bytes();
        MacAddr([0x02, v[0], v[1], v[2], v[3], v[4]])
    }

    /// The six bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_and_are_checked() {
        let m = MacAddr::parse("02:AB:cd:00:00:01").unwrap();
        assert_eq!(m.bytes(), [2, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:+1",
        ] {
            assert!(
                matches!(MacAddr::parse(bad), Err(MacError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            MacAddr::parse("01:00:5e:00:00:01"),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            MacAddr::parse("ff:ff:ff:ff:ff:ff"),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            MacAddr::parse("00:00:00:00:00:00"),
            Err(MacError::Zero(_))
        ));
    }

    #[test]
    fn derived_macs_are_local_unicast_and_stable() {
        let a = MacAddr::derived("cctap0");
        assert_eq!(a, MacAddr::derived("cctap0"));
        assert_ne!(a, MacAddr::derived("cctap1"));
        assert_eq!(a.bytes()[0], 0x02);
        assert!(MacAddr::from_bytes(a.bytes()).is_ok());
    }
}
