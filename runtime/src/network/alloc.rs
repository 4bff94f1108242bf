//! Address allocation: the pool (an IPv4 prefix such as `10.200.0.0/16`)
//! is carved into /30 subnets, one per networked sandbox: `.0` network,
//! `.1` the host side of its link (the guest's gateway), `.2` the guest,
//! `.3` broadcast.
//!
//! The [`Allocator`] only keeps a set in memory; the truth is the sandbox
//! records (each networked record holds its subnet), from which a
//! restarted daemon rebuilds it with [`Allocator::reserve`]. It hands out
//! subnets round-robin rather than lowest-first, so an address freed by
//! one sandbox is not given to the next one at once (connection-tracking
//! entries of the old sandbox's flows would otherwise route stray replies
//! to the new one). It does no I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Prefix length of every sandbox's subnet.
pub const SUBNET_PREFIX: u8 = 30;
const SUBNET_SIZE: u32 = 1 << (32 - SUBNET_PREFIX);

/// The addresses sandbox subnets are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: Ipv4Addr,
    prefix: u8,
}

/// Why a pool was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network pool {value:?}: {reason}")]
pub struct PoolError {
    value: String,
    reason: &'static str,
}

impl Pool {
    /// The default pool, `10.200.0.0/16` (16384 sandboxes).
    pub const DEFAULT: Pool = Pool {
        base: Ipv4Addr::new(10, 200, 0, 0),
        prefix: 16,
    };

    /// A pool of `base/prefix`: prefix 8 to 29, `base` its network address.
    pub fn new(base: Ipv4Addr, prefix: u8) -> Result<Pool, PoolError> {
        let err = |reason| PoolError {
            value: format!("{base}/{prefix}"),
            reason,
        };
        if !(8..=29).contains(&prefix) {
            return Err(err("the prefix length must be 8 to 29"));
        }
        if u32::from(base) & !mask(prefix) != 0 {
            return Err(err("the address must be the network's first address"));
        }
        if base.is_loopback() || base.is_multicast() || base.is_unspecified() {
            return Err(err("not a unicast range"));
        }
        Ok(Pool { base, prefix })
    }

    /// Its first address.
    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    /// Its prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many sandbox subnets it holds.
    pub fn subnets(&self) -> u32 {
        1 << (SUBNET_PREFIX - self.prefix)
    }

    /// The `index`th subnet (`index < subnets()`).
    fn subnet(&self, index: u32) -> Subnet {
        Subnet(Ipv4Addr::from(u32::from(self.base) + index * SUBNET_SIZE))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Pool {
    type Err = PoolError;
    fn from_str(s: &str) -> Result<Pool, PoolError> {
        let err = |reason| PoolError {
            value: s.to_string(),
            reason,
        };
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| err("expected ADDRESS/PREFIX"))?;
        let base = a.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix = p.parse().map_err(|_| err("not a prefix length"))?;
        Pool::new(base, prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// One sandbox's /30, named by its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet(Ipv4Addr);

impl Subnet {
    /// The /30 that holds `addr`.
    pub fn containing(addr: Ipv4Addr) -> Subnet {
        Subnet(Ipv4Addr::from(u32::from(addr) & mask(SUBNET_PREFIX)))
    }

    /// The host side of the link: the guest's gateway.
    pub fn host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 1)
    }

    /// The guest's address.
    pub fn guest(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0) + 2)
    }
}

/// Which subnets of a pool are taken.
#[derive(Debug)]
pub struct Allocator {
    pool: Pool,
    used: BTreeSet<Subnet>,
    next: u32,
}

impl Allocator {
    /// Nothing taken yet.
    pub fn new(pool: Pool) -> Allocator {
        Allocator {
            pool,
            used: BTreeSet::new(),
            next: 0,
        }
    }

    /// The pool.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// Takes a free subnet (`None` when the pool is exhausted).
    pub fn allocate(&mut self) -> Option<Subnet> {
        let n = self.pool.subnets();
        for i in 0..n {
            let index = (self.next + i) % n;
            let s = self.pool.subnet(index);
            if self.used.insert(s) {
                self.next = (index + 1) % n;
                return Some(s);
            }
        }
        None
    }

    /// Marks `s` taken (a record found at start-up). `false` when it
    /// already was: two records claim it. Subnets outside the pool (a pool
    /// changed between daemons) are tracked too, so they are never handed
    /// out twice should they overlap the new pool.
    pub fn reserve(&mut self, s: Subnet) -> bool {
        self.used.insert(s)
    }

    /// Returns `s` to the pool.
    pub fn release(&mut self, s: Subnet) {
        self.used.remove(&s);
    }

    /// How many subnets are taken.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Pool {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pools_parse_and_refuse_nonsense() {
        assert_eq!(pool("10.200.0.0/16"), Pool::DEFAULT);
        assert_eq!(Pool::DEFAULT.subnets(), 16384);
        assert_eq!(pool("192.168.7.0/29").subnets(), 2);
        for bad in [
            "10.200.0.0",
            "10.200.0.1/16",
            "10.200.0.0/30",
            "10.0.0.0/7",
            "127.0.0.0/8",
            "224.0.0.0/8",
            "10.200.0.0/x",
            "10.200.0/16",
        ] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn subnets_are_slash_30s_with_host_then_guest() {
        let mut a = Allocator::new(Pool::DEFAULT);
        let s0 = a.allocate().unwrap_or_else(|| panic!("empty"));
        let s1 = a.allocate().unwrap_or_else(|| panic!("empty"));
        assert_eq!(
            (s0.host(), s0.guest()),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            (s1.host(), s1.guest()),
            (Ipv4Addr::new(10, 200, 0, 5), Ipv4Addr::new(10, 200, 0, 6))
        );
        assert_eq!(Subnet::containing(s1.guest()), s1);
        assert_eq!(Subnet::containing(s1.host()), s1);
    }

    #[test]
    fn allocation_is_round_robin_never_double_and_exhausts() {
        let mut a = Allocator::new(pool("10.9.0.0/28")); // 4 subnets
        let got: Vec<Subnet> = (0..4).filter_map(|_| a.allocate()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(a.allocate(), None, "the pool is exhausted");
        // A freed subnet comes back, but only after the others have had
        // their turn.
        a.release(got[1]);
        a.release(got[3]);
        assert_eq!(a.allocate(), Some(got[1]));
        assert_eq!(a.allocate(), Some(got[3]));
        assert_eq!(a.allocate(), None);
        a.release(got[0]);
        a.release(got[2]);
        assert_eq!(a.allocate(), Some(got[0]), "wraps past the end");
        assert_eq!(a.in_use(), 3);
    }

    #[test]
    fn reserved_subnets_are_skipped_and_double_claims_seen() {
        let mut a = Allocator::new(pool("10.9.0.0/29")); // 2 subnets
        let first = Subnet::containing(Ipv4Addr::new(10, 9, 0, 2));
        assert!(a.reserve(first));
        assert!(!a.reserve(first), "claimed twice");
        let outside = Subnet::containing(Ipv4Addr::new(10, 77, 0, 6));
        assert!(a.reserve(outside));
        let s = a.allocate().unwrap_or_else(|| panic!("empty"));
        assert_eq!(s.guest(), Ipv4Addr::new(10, 9, 0, 6));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let a = std::sync::Arc::new(std::sync::Mutex::new(Allocator::new(pool("10.9.0.0/22"))));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    (0..32)
                        .filter_map(|_| a.lock().ok()?.allocate())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Subnet> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        assert_eq!(all.len(), 256);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256, "a subnet was handed out twice");
    }
}
