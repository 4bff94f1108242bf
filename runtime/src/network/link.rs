//! The links of one sandbox: its network namespace, the veth pair from the
//! host into it, and the TAP the VMM opens there, as `ip` and `tc` command
//! batches. Building the batches is pure (and unit-tested); running them is
//! [`super::cmd`]'s job.
//!
//! ```text
//!  root namespace                 | namespace cocoon-<id>
//!  coc<id> 10.200.x.1/30  <-veth->| veth0 ==tc mirred== tap0 <-> cocoon-vmm <-> guest eth0 10.200.x.2/30
//! ```
//!
//! Nothing is routed inside the sandbox's namespace: tc ingress rules
//! redirect every frame from the TAP to `veth0` and back, so the guest's
//! eth0 and the host's `coc<id>` share one Ethernet segment and the host
//! routes (and NATs) the guest's traffic like any neighbour's.

/// The TAP inside every sandbox namespace.
pub const TAP: &str = "tap0";
/// The namespace side of the veth pair.
pub const NS_VETH: &str = "veth0";
/// Prefix of every host-side interface; the firewall's rules match it.
pub const HOST_IF_PREFIX: &str = "coc";
/// Prefix of every sandbox namespace name.
pub const NETNS_PREFIX: &str = "cocoon-";
/// Where `ip netns` keeps namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The kernel's longest interface name (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

/// The names of one sandbox's network objects, from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNames {
    /// The network namespace (`cocoon-<id>`).
    pub netns: String,
    /// The host side of the veth pair (`coc<id>`).
    pub host_if: String,
}

impl LinkNames {
    /// Names for sandbox `id`, which must be 1 to 12 characters of
    /// `[0-9a-z]` (ids are 12 hex digits) so that every name fits the
    /// kernel's 15-byte limit and no name can carry shell or `ip` syntax.
    pub fn for_sandbox(id: &str) -> Option<LinkNames> {
        let ok = !id.is_empty()
            && HOST_IF_PREFIX.len() + id.len() <= MAX_IFNAME
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        ok.then(|| LinkNames {
            netns: format!("{NETNS_PREFIX}{id}"),
            host_if: format!("{HOST_IF_PREFIX}{id}"),
        })
    }
}

/// The guest NIC's MAC: locally administered unicast (`02:`), then the
/// last ten hex digits of the sandbox id, so each sandbox's is its own.
pub fn guest_mac(id: &str) -> String {
    let hex: Vec<u8> = id
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    let mut digits = vec![b'0'; 10usize.saturating_sub(hex.len())];
    digits.extend_from_slice(&hex[hex.len().saturating_sub(10)..]);
    let mut mac = String::from("02");
    for pair in digits.chunks(2) {
        mac.push(':');
        mac.push_str(&String::from_utf8_lossy(pair));
    }
    mac
}

/// Root-namespace half, for `ip -batch -`: the veth pair with its peer
/// created straight into the sandbox's namespace, the host side addressed
/// and up.
pub fn host_batch(n: &LinkNames, host_addr: std::net::Ipv4Addr, prefix: u8) -> String {
    format!(
        "link add {host} type veth peer name {NS_VETH} netns {ns}\n\
         addr add {host_addr}/{prefix} dev {host}\n\
         link set {host} up\n",
        host = n.host_if,
        ns = n.netns,
    )
}

/// Sandbox-namespace half, for `ip -n NETNS -batch -`: loopback, the TAP
/// (persistent, for the VMM to attach to), and the veth end up.
pub fn netns_batch() -> String {
    format!(
        "link set lo up\n\
         tuntap add dev {TAP} mode tap\n\
         link set {TAP} up\n\
         link set {NS_VETH} up\n"
    )
}

/// For `tc -n NETNS -batch -`: every frame arriving on either of the TAP
/// and `veth0` leaves through the other (u32 matching everything: older
/// kernels and minimal configs have it where they lack matchall).
pub fn tc_batch() -> String {
    let mut s = String::new();
    for (from, to) in [(TAP, NS_VETH), (NS_VETH, TAP)] {
        s.push_str(&format!(
            "qdisc add dev {from} ingress\n\
             filter add dev {from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {to}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_refuse_odd_ids() {
        let n = LinkNames::for_sandbox("0123456789ab").unwrap_or_else(|| panic!("refused"));
        assert_eq!(n.netns, "cocoon-0123456789ab");
        assert_eq!(n.host_if, "coc0123456789ab");
        assert_eq!(n.host_if.len(), 15);
        for bad in ["", "0123456789abc", "ab cd", "AB", "a/b", "x\n"] {
            assert_eq!(LinkNames::for_sandbox(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn macs_are_local_unicast_and_per_sandbox() {
        assert_eq!(guest_mac("0123456789ab"), "02:23:45:67:89:ab");
        assert_eq!(guest_mac("ab"), "02:00:00:00:00:ab");
        assert_ne!(guest_mac("0123456789ab"), guest_mac("0123456789ac"));
    }

    #[test]
    fn batches_wire_veth_tap_and_redirects() {
        let n = LinkNames::for_sandbox("0123456789ab").unwrap_or_else(|| panic!("refused"));
        let host = host_batch(&n, std::net::Ipv4Addr::new(10, 200, 0, 1), 30);
        assert_eq!(
            host.lines().collect::<Vec<_>>(),
            [
                "link add coc0123456789ab type veth peer name veth0 netns cocoon-0123456789ab",
                "addr add 10.200.0.1/30 dev coc0123456789ab",
                "link set coc0123456789ab up",
            ]
        );
        let ns = netns_batch();
        assert!(ns.contains("tuntap add dev tap0 mode tap\n"), "{ns}");
        assert!(ns.starts_with("link set lo up\n"), "{ns}");
        let tc = tc_batch();
        assert!(tc.contains("filter add dev tap0 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev veth0\n"), "{tc}");
        assert!(tc.contains("filter add dev veth0 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev tap0\n"), "{tc}");
        assert_eq!(tc.matches("qdisc add dev").count(), 2);
    }
}
