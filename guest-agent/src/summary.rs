//! The one-line guest summary printed in `cocoon.mode=summary`: what the
//! guest kernel sees of the VM it was given.

use std::fmt;

/// What the guest sees.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Online CPUs.
    pub cpus: usize,
    /// RAM the kernel was handed (System RAM in /proc/iomem), in KiB.
    pub ram_kib: u64,
    /// MemTotal from /proc/meminfo, in KiB.
    pub mem_total_kib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary cpus={} ram_kib={} mem_total_kib={} kernel={}",
            self.cpus, self.ram_kib, self.mem_total_kib, self.kernel
        )
    }
}

/// Counts `processor` lines in /proc/cpuinfo.
pub fn parse_cpus(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

/// Sums the top-level "System RAM" ranges of /proc/iomem, in KiB.
pub fn parse_ram_kib(iomem: &str) -> u64 {
    iomem
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(": System RAM"))
        .filter_map(|l| {
            let range = l.split(" : ").next()?;
            let (a, b) = range.split_once('-')?;
            let a = u64::from_str_radix(a.trim(), 16).ok()?;
            let b = u64::from_str_radix(b.trim(), 16).ok()?;
            Some((b.checked_sub(a)? + 1) / 1024)
        })
        .sum()
}

/// Reads MemTotal from /proc/meminfo.
pub fn parse_mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Collects the summary from /proc.
pub fn collect() -> Summary {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Summary {
        cpus: parse_cpus(&read("/proc/cpuinfo")),
        ram_kib: parse_ram_kib(&read("/proc/iomem")),
        mem_total_kib: parse_mem_total_kib(&read("/proc/meminfo")),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iomem_ram_is_summed() {
        let iomem = "00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n00100000-07feffff : System RAM\n  01000000-01ffffff : Kernel code\n";
        assert_eq!(
            parse_ram_kib(iomem),
            (0x9fc00 - 0x1000) / 1024 + (0x7ff0000 - 0x100000) / 1024
        );
    }

    #[test]
    fn meminfo_and_cpuinfo() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:         118092 kB\nMemFree: 1 kB\n"),
            118092
        );
        assert_eq!(parse_mem_total_kib("garbage"), 0);
        assert_eq!(parse_cpus("processor\t: 0\nvendor\nprocessor\t: 1\n"), 2);
    }
}
