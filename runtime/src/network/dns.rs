//! The container's `/etc/resolv.conf` for a networked sandbox: the host's
//! own, less the name servers a sandbox cannot use (loopback ones, such as
//! systemd-resolved's 127.0.0.53, and IPv6 ones: the guest has IPv4 only),
//! as Docker does. When `/etc/resolv.conf` only names loopback servers,
//! systemd-resolved's list of upstream servers is used instead. With no
//! usable server left there are no `nameserver` lines at all (no public
//! resolver is made up).

use std::net::IpAddr;
use std::path::Path;

/// Where systemd-resolved lists the real upstream servers.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// The resolv.conf a networked sandbox gets on this host.
pub fn host_resolv_conf() -> String {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
    let main = read("/etc/resolv.conf");
    let (text, servers) = filter(&main);
    if servers == 0 && nameservers(&main) > 0 {
        let upstream = read(RESOLVED_UPSTREAM);
        let (u, n) = filter(&upstream);
        if n > 0 {
            return u;
        }
    }
    text
}

fn nameservers(text: &str) -> usize {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .count()
}

/// Keeps `search`, `domain` and `options` lines and the usable
/// `nameserver`s; returns the text and how many servers it kept.
pub fn filter(text: &str) -> (String, usize) {
    let mut out = String::new();
    let mut servers = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let usable = words
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| match a {
                        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
                        IpAddr::V6(_) => false,
                    });
                if usable {
                    servers += 1;
                    out.push_str(line.trim());
                    out.push('\n');
                }
            }
            Some("search" | "domain" | "options") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    (out, servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ipv6_servers_are_dropped() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::1\nsearch example.org\noptions edns0 trust-ad\n";
        let (text, n) = filter(host);
        assert_eq!(n, 1);
        assert_eq!(
            text,
            "nameserver 192.0.2.53\nsearch example.org\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn nothing_usable_means_no_nameserver() {
        let (text, n) = filter("nameserver 127.0.0.1\nnameserver bogus\n");
        assert_eq!((text.as_str(), n), ("", 0));
        assert_eq!(filter(""), (String::new(), 0));
    }
}
