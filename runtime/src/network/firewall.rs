//! The host's side of every sandbox network: IPv4 forwarding on, and one
//! nftables table of Cocoon's own, `inet cocoon`, whose rules match the
//! host-side interface prefix (`coc*`) rather than naming sandboxes, so
//! there is nothing per sandbox to add or to leak:
//!
//! - input: from a sandbox interface to the host itself, only replies
//!   (established, related) are accepted; everything else is dropped, so a
//!   sandbox reaches no service of the host (on any of its addresses);
//! - forward: sandbox interface to sandbox interface is dropped;
//! - postrouting: traffic from the pool leaving through any other
//!   interface is masqueraded (the pool is a set, so daemons with different
//!   pools share the table).
//!
//! The script is applied as one nft transaction and is idempotent: `add`
//! leaves existing objects alone and each chain is flushed before its rules
//! are written again. Nothing here removes the table: it is harmless
//! without sandboxes.

use super::alloc::Pool;
use super::link::HOST_IF_PREFIX;

/// The table's name (family `inet`).
pub const TABLE: &str = "cocoon";

/// The nft script (for `nft -f -`) that sets up [`TABLE`] for `pool`.
pub fn nft_script(pool: Pool) -> String {
    let sb = format!("\"{HOST_IF_PREFIX}*\"");
    let t = format!("inet {TABLE}");
    format!(
        "add table {t}\n\
         add set {t} pools {{ type ipv4_addr; flags interval; auto-merge; }}\n\
         add element {t} pools {{ {pool} }}\n\
         add chain {t} input {{ type filter hook input priority filter; policy accept; }}\n\
         flush chain {t} input\n\
         add rule {t} input iifname {sb} ct state established,related accept\n\
         add rule {t} input iifname {sb} drop\n\
         add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}\n\
         flush chain {t} forward\n\
         add rule {t} forward iifname {sb} oifname {sb} drop\n\
         add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {t} postrouting\n\
         add rule {t} postrouting ip saddr @pools oifname != {sb} masquerade\n"
    )
}

/// Per-interface settings of a new host-side interface (path under
/// `/proc/sys/net`, value): strict reverse-path filtering, so a guest can
/// send only from addresses routed back through its own link (no spoofing
/// another sandbox or an outside address), and no IPv6 on the host side.
pub fn host_if_sysctls(host_if: &str) -> [(String, &'static str); 2] {
    [
        (format!("ipv4/conf/{host_if}/rp_filter"), "1"),
        (format!("ipv6/conf/{host_if}/disable_ipv6"), "1"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_one_table_with_generic_rules() {
        let s = nft_script(Pool::DEFAULT);
        assert!(
            s.contains("add element inet cocoon pools { 10.200.0.0/16 }"),
            "{s}"
        );
        assert!(s.contains("add rule inet cocoon input iifname \"coc*\" ct state established,related accept\nadd rule inet cocoon input iifname \"coc*\" drop\n"), "{s}");
        assert!(
            s.contains("add rule inet cocoon forward iifname \"coc*\" oifname \"coc*\" drop"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr @pools oifname != \"coc*\" masquerade"),
            "{s}"
        );
        // Re-applying must not duplicate rules: every chain with rules is
        // flushed first.
        for chain in ["input", "forward", "postrouting"] {
            let flush = s.find(&format!("flush chain inet cocoon {chain}\n"));
            let rule = s.find(&format!("add rule inet cocoon {chain} "));
            assert!(flush.is_some() && flush < rule, "{chain}: {s}");
        }
        assert!(
            !s.contains("delete"),
            "never removes what other daemons use"
        );
    }

    #[test]
    fn sysctls_name_the_interface() {
        let [rp, v6] = host_if_sysctls("coc0123456789ab");
        assert_eq!(rp, ("ipv4/conf/coc0123456789ab/rp_filter".into(), "1"));
        assert_eq!(v6.0, "ipv6/conf/coc0123456789ab/disable_ipv6");
    }
}
