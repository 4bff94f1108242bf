//! The guest's network: `lo` always up, and `eth0` addressed with a default
//! route when the host asks for it on the kernel command line with
//! `cocoon.net=ADDR/PREFIX,GATEWAY` (the runtime's `network: default`).
//!
//! The guest kernel has no IP autoconfiguration and the initramfs has no
//! `ip` tool, so this is done with the classic ioctls (SIOCSIFADDR,
//! SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCADDRT) before the agent answers the
//! host: once the host reaches the agent, the network is ready. IPv4 only;
//! DNS is the host's business (it writes the container's resolv.conf).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys::check;

/// What `cocoon.net=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// eth0's address.
    pub addr: Ipv4Addr,
    /// Its prefix length (1 to 30).
    pub prefix: u8,
    /// The default gateway (the host side of the link).
    pub gateway: Ipv4Addr,
}

impl NetConfig {
    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }
}

/// The `cocoon.net=` parameter, when the command line has one. A malformed
/// value is an error (the host asked for a network and would not get it).
pub fn from_cmdline(cmdline: &str) -> Result<Option<NetConfig>, String> {
    let Some(v) = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("cocoon.net="))
    else {
        return Ok(None);
    };
    let bad = || format!("cocoon.net={v}: expected ADDR/PREFIX,GATEWAY");
    let (cidr, gw) = v.split_once(',').ok_or_else(bad)?;
    let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let gateway: Ipv4Addr = gw.parse().map_err(|_| bad())?;
    if !(1..=30).contains(&prefix) {
        return Err(bad());
    }
    let cfg = NetConfig {
        addr,
        prefix,
        gateway,
    };
    let mask = u32::from(cfg.netmask());
    if u32::from(addr) & mask != u32::from(gateway) & mask || addr == gateway {
        return Err(format!(
            "cocoon.net={v}: the gateway must be another address of the same subnet"
        ));
    }
    Ok(Some(cfg))
}

/// Brings `lo` up and, with a config, addresses `eth0`, brings it up and
/// adds the default route. Errors say which step failed.
pub fn setup(cfg: Option<&NetConfig>) -> io::Result<()> {
    let sock = inet_socket()?;
    set_up(&sock, "lo")?;
    let Some(cfg) = cfg else {
        return Ok(());
    };
    let step =
        |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let mut r = ifreq("eth0")?;
    r.ifr_ifru.ifru_addr = sockaddr(cfg.addr);
    // SAFETY: the request reads a live ifreq naming eth0.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &r) })
        .map_err(step("eth0 address"))?;
    let mut r = ifreq("eth0")?;
    r.ifr_ifru.ifru_netmask = sockaddr(cfg.netmask());
    // SAFETY: the request reads a live ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &r) })
        .map_err(step("eth0 netmask"))?;
    set_up(&sock, "eth0")?;
    // SAFETY: rtentry is plain data; all-zero (no device, metric 0) is a
    // valid start.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(cfg.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: the request reads a live rtentry whose pointers (rt_dev) are
    // null.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) })
        .map_err(step("default route"))?;
    Ok(())
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the result is checked.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a fresh socket nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= r.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(a).to_be();
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and both
    // are plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Sets IFF_UP on `name`.
fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("bringing {name} up: {e}"));
    let mut r = ifreq(name)?;
    // SAFETY: the request fills a live ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r) }).map_err(ctx)?;
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: the request reads a live ifreq.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &r) }).map_err(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_parameter_is_parsed() {
        assert_eq!(from_cmdline("quiet cocoon.mode=serve"), Ok(None));
        assert_eq!(
            from_cmdline("quiet cocoon.net=10.200.0.2/30,10.200.0.1 cocoon.mode=serve"),
            Ok(Some(NetConfig {
                addr: Ipv4Addr::new(10, 200, 0, 2),
                prefix: 30,
                gateway: Ipv4Addr::new(10, 200, 0, 1),
            }))
        );
        let cfg = from_cmdline("cocoon.net=10.1.2.3/24,10.1.2.1")
            .ok()
            .flatten()
            .map(|c| c.netmask());
        assert_eq!(cfg, Some(Ipv4Addr::new(255, 255, 255, 0)));
    }

    #[test]
    fn malformed_net_parameters_are_errors() {
        for bad in [
            "cocoon.net=",
            "cocoon.net=10.200.0.2/30",
            "cocoon.net=10.200.0.2,10.200.0.1",
            "cocoon.net=10.200.0.2/31,10.200.0.3",
            "cocoon.net=10.200.0.2/0,10.200.0.1",
            "cocoon.net=10.200.0.2/30,10.200.0.9",
            "cocoon.net=10.200.0.2/30,10.200.0.2",
            "cocoon.net=300.0.0.1/24,10.0.0.1",
            "cocoon.net=x/24,y",
        ] {
            assert!(from_cmdline(bad).is_err(), "{bad}");
        }
    }
}
