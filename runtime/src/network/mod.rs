//! Sandbox networking (`network: default`): each sandbox gets a network
//! namespace of its own holding the TAP its VMM opens, a veth pair to the
//! host, a /30 from the pool, and outbound access through NAT on the host;
//! sandboxes cannot reach each other or the host's own services.
//! `network: none` uses none of this: the VM has no NIC.
//!
//! [`HostNetwork`] is the entry point for the sandbox manager: it
//! allocates addresses ([`alloc`]), prepares the host once ([`firewall`]:
//! forwarding and the `inet cocoon` nftables table), and sets up and tears
//! down each sandbox's links ([`link`], by running `ip` and `tc` through
//! [`cmd`]). What a sandbox got is a [`SandboxNetwork`], kept in its
//! record: allocations are rebuilt from the records when the daemon
//! restarts, and teardown works from the record alone (names derive from
//! the sandbox id), whether the VMM is alive, dead or was never started.
//!
//! Not here: port publishing, policies beyond "out only", IPv6 in the
//! guest, and the guest side (the agent configures eth0 from the kernel
//! command line, see [`SandboxNetwork::kernel_param`]).

pub mod alloc;
pub mod cmd;
pub mod dns;
pub mod firewall;
pub mod link;
pub mod vhost;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use alloc::{Allocator, Pool, PoolError, Subnet, SUBNET_PREFIX};
use link::LinkNames;

/// Errors of sandbox networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Every subnet of the pool is taken.
    #[error("the network pool {0} is exhausted")]
    PoolExhausted(Pool),
    /// The sandbox id cannot name interfaces.
    #[error("sandbox id {0:?} cannot name network interfaces")]
    BadId(String),
    /// A tool could not be started.
    #[error("running {prog}: {source} (network: default needs iproute2 and nftables)")]
    Spawn {
        /// The program.
        prog: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{cmd}: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status and stderr.
        detail: String,
    },
    /// A kernel setting could not be written.
    #[error("writing {path}: {source}")]
    Sysctl {
        /// The `/proc/sys` path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a networked sandbox was given; kept in its record (and shown by
/// the API) while it holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxNetwork {
    /// The guest's address (eth0).
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The guest's default gateway: the host side of its link.
    pub gateway: Ipv4Addr,
    /// The guest NIC's MAC address.
    pub mac: String,
    /// The network namespace holding the TAP and the VMM
    /// (`/run/netns/<netns>`).
    pub netns: String,
    /// The host side of its veth pair.
    pub host_interface: String,
}

impl SandboxNetwork {
    /// The subnet it holds.
    pub fn subnet(&self) -> Subnet {
        Subnet::containing(self.ip)
    }

    /// The network namespace's file (for `setns`).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(link::NETNS_DIR).join(&self.netns)
    }

    /// The kernel command-line parameter the guest agent configures eth0
    /// from: `cocoon.net=ADDR/PREFIX,GATEWAY`.
    pub fn kernel_param(&self) -> String {
        format!(
            "cocoon.net={}/{},{}",
            self.ip, self.prefix_len, self.gateway
        )
    }

    /// The VMM's `--net` value: the TAP in the namespace and the MAC, and
    /// whether the kernel's vhost-net moves the frames.
    pub fn vmm_net_arg(&self, vhost: bool) -> String {
        let arg = format!("tap={},mac={}", link::TAP, self.mac);
        if vhost {
            arg + ",vhost=on"
        } else {
            arg
        }
    }

    fn names(&self) -> LinkNames {
        LinkNames {
            netns: self.netns.clone(),
            host_if: self.host_interface.clone(),
        }
    }
}

/// Networking of one daemon: the pool's allocations and the host's
/// preparation.
#[derive(Debug)]
pub struct HostNetwork {
    alloc: Mutex<Allocator>,
    /// Set once the host has been prepared by this daemon.
    prepared: tokio::sync::Mutex<bool>,
    /// `ip netns add` makes `/run/netns` a shared mount the first time;
    /// two doing that at once can stack mounts and hide each other's
    /// namespaces, so adds are one at a time.
    netns_add: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostNetwork {
    /// Nothing allocated, host not touched yet.
    pub fn new(pool: Pool) -> HostNetwork {
        HostNetwork {
            alloc: Mutex::new(Allocator::new(pool)),
            prepared: tokio::sync::Mutex::new(false),
            netns_add: tokio::sync::Mutex::new(()),
        }
    }

    /// The pool.
    pub fn pool(&self) -> Pool {
        lock(&self.alloc).pool()
    }

    /// Takes a subnet for sandbox `id` and names its links. Nothing is
    /// created yet ([`setup`](Self::setup) does).
    pub fn allocate(&self, id: &str) -> Result<SandboxNetwork, NetError> {
        let names = LinkNames::for_sandbox(id).ok_or_else(|| NetError::BadId(id.to_string()))?;
        let routed = host_routes();
        let mut a = lock(&self.alloc);
        // Subnets the host already routes somewhere (another daemon on the
        // same pool, links of a sandbox whose state was lost) are skipped:
        // a second link with the same /30 would steal its replies.
        let mut skipped = Vec::new();
        let found = loop {
            match a.allocate() {
                Some(s) if routed.iter().any(|r| r.within(s)) => skipped.push(s),
                other => break other,
            }
        };
        for s in skipped {
            a.release(s);
        }
        let s = found.ok_or(NetError::PoolExhausted(a.pool()))?;
        Ok(SandboxNetwork {
            ip: s.guest(),
            prefix_len: SUBNET_PREFIX,
            gateway: s.host(),
            mac: link::guest_mac(id),
            netns: names.netns,
            host_interface: names.host_if,
        })
    }

    /// Marks a recorded allocation taken (daemon start-up); `false` when
    /// another record already holds it.
    pub fn reserve(&self, net: &SandboxNetwork) -> bool {
        lock(&self.alloc).reserve(net.subnet())
    }

    /// Returns an allocation to the pool (after [`teardown`](Self::teardown)).
    pub fn free(&self, net: &SandboxNetwork) {
        lock(&self.alloc).release(net.subnet());
    }

    /// How many subnets are allocated.
    pub fn in_use(&self) -> usize {
        lock(&self.alloc).in_use()
    }

    /// Prepares the host once per daemon: `/dev/net/tun`, IPv4 forwarding,
    /// the nftables table. Later calls return at once.
    pub async fn prepare_host(&self) -> Result<(), NetError> {
        let mut done = self.prepared.lock().await;
        if *done {
            return Ok(());
        }
        if !Path::new("/dev/net/tun").exists() {
            // Where tun is a module and nothing made its device node.
            let _ = cmd::run("modprobe", &["tun"], None).await;
        }
        write_sysctl("ipv4/ip_forward", "1")?;
        cmd::run(
            "nft",
            &["-f", "-"],
            Some(&firewall::nft_script(self.pool())),
        )
        .await?;
        *done = true;
        Ok(())
    }

    /// Creates the sandbox's namespace, veth pair and TAP. On failure,
    /// whatever was made is removed again.
    pub async fn setup(&self, net: &SandboxNetwork) -> Result<(), NetError> {
        self.prepare_host().await?;
        match self.create_links(net).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(t) = self.teardown(net).await {
                    tracing::warn!("removing a half-made network: {t}");
                }
                Err(e)
            }
        }
    }

    async fn create_links(&self, net: &SandboxNetwork) -> Result<(), NetError> {
        let n = net.names();
        {
            let _one = self.netns_add.lock().await;
            cmd::run("ip", &["netns", "add", &n.netns], None).await?;
        }
        cmd::run(
            "ip",
            &["-batch", "-"],
            Some(&link::host_batch(&n, net.gateway, net.prefix_len)),
        )
        .await?;
        for (path, value) in firewall::host_if_sysctls(&n.host_if) {
            // Hardening, not function: a host without IPv6 has no such file.
            if let Err(e) = write_sysctl(&path, value) {
                tracing::debug!("{e}");
            }
        }
        cmd::run(
            "ip",
            &["-n", &n.netns, "-batch", "-"],
            Some(&link::netns_batch()),
        )
        .await?;
        cmd::run(
            "tc",
            &["-n", &n.netns, "-batch", "-"],
            Some(&link::tc_batch()),
        )
        .await
    }

    /// Removes the sandbox's veth pair, TAP and namespace, whichever
    /// exist; safe to repeat, and works whether its VMM is alive (kill it
    /// first), dead, or was never started. Does not free the address.
    pub async fn teardown(&self, net: &SandboxNetwork) -> Result<(), NetError> {
        let n = net.names();
        // Deleting one end of a veth pair deletes both, synchronously;
        // leaving it to the namespace's destruction would be asynchronous.
        if Path::new("/sys/class/net").join(&n.host_if).exists() {
            cmd::run("ip", &["link", "del", &n.host_if], None).await?;
        }
        if net.netns_path().exists() {
            // Likewise the TAP; a failure here is not fatal, the namespace
            // going takes it along.
            let _ = cmd::run("ip", &["-n", &n.netns, "link", "del", link::TAP], None).await;
            cmd::run("ip", &["netns", "del", &n.netns], None).await?;
        }
        Ok(())
    }
}

/// An IPv4 route of the host's main table: destination and mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    dest: u32,
    mask: u32,
}

impl Route {
    /// Whether the route is for `s` or a part of it (a default or wider
    /// route is not: the sandbox's /30 is more specific and wins).
    fn within(&self, s: Subnet) -> bool {
        let net = u32::from(s.host()) & !3;
        self.mask >= 0xffff_fffc && self.dest & 0xffff_fffc == net
    }
}

/// The host's IPv4 routes (`/proc/net/route`); none when unreadable.
fn host_routes() -> Vec<Route> {
    parse_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
}

/// Parses `/proc/net/route`: addresses are printed as the hex of the
/// network-order word read natively.
fn parse_routes(text: &str) -> Vec<Route> {
    let word = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Route {
                dest: word(f.get(1)?)?,
                mask: word(f.get(7)?)?,
            })
        })
        .collect()
}

/// Writes `value` to `/proc/sys/net/<rel>`.
fn write_sysctl(rel: &str, value: &str) -> Result<(), NetError> {
    let path = Path::new("/proc/sys/net").join(rel);
    std::fs::write(&path, value).map_err(|source| NetError::Sysctl { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_name_everything_from_the_id() {
        let h = HostNetwork::new(Pool::DEFAULT);
        let n = h.allocate("0123456789ab").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.ip, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(n.gateway, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(n.kernel_param(), "cocoon.net=10.200.0.2/30,10.200.0.1");
        assert_eq!(n.vmm_net_arg(false), "tap=tap0,mac=02:23:45:67:89:ab");
        assert_eq!(
            n.vmm_net_arg(true),
            "tap=tap0,mac=02:23:45:67:89:ab,vhost=on"
        );
        assert_eq!(n.netns_path(), Path::new("/run/netns/cocoon-0123456789ab"));
        assert_eq!(n.host_interface, "coc0123456789ab");
        assert!(h.allocate("NOT-AN-ID").is_err());
        assert_eq!(h.in_use(), 1);
        // A record of the same subnet cannot be taken over twice.
        assert!(!h.reserve(&n));
        h.free(&n);
        assert!(h.reserve(&n));
    }

    #[test]
    fn records_round_trip_as_json() {
        let h = HostNetwork::new(Pool::DEFAULT);
        let n = h.allocate("aaaaaaaaaaaa").unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_string(&n).unwrap_or_default();
        assert!(json.contains("\"ip\":\"10.200.0.2\""), "{json}");
        let back: SandboxNetwork = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, n);
    }

    #[test]
    fn routes_parse_and_only_a_subnets_own_routes_conflict() {
        let le = cfg!(target_endian = "little");
        // 192.0.2.0/24 and 10.200.0.4/30 as the kernel prints them here.
        let (net, mask24, sub, mask30) = if le {
            ("000200C0", "00FFFFFF", "0400C80A", "FCFFFFFF")
        } else {
            ("C0000200", "FFFFFF00", "0AC80004", "FFFFFFFC")
        };
        let text = format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t{net}\t00000000\t0001\t0\t0\t0\t{mask24}\t0\t0\t0\n\
             cocx\t{sub}\t00000000\t0001\t0\t0\t0\t{mask30}\t0\t0\t0\n"
        );
        let routes = parse_routes(&text);
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[1].dest, u32::from(Ipv4Addr::new(192, 0, 2, 0)));
        let taken = Subnet::containing(Ipv4Addr::new(10, 200, 0, 6));
        let free = Subnet::containing(Ipv4Addr::new(10, 200, 0, 2));
        assert!(routes.iter().any(|r| r.within(taken)));
        assert!(
            !routes.iter().any(|r| r.within(free)),
            "default and /24 do not count"
        );
    }

    #[test]
    fn an_exhausted_pool_says_so() {
        let h = HostNetwork::new("10.9.0.0/29".parse().unwrap_or(Pool::DEFAULT));
        assert!(h.allocate("a").is_ok());
        assert!(h.allocate("b").is_ok());
        let e = h
            .allocate("c")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("exhausted"), "{e}");
    }
}
