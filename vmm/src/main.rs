//! `cocoon-vmm`: boots one micro-VM from flags or a JSON config and exits
//! when the guest does. Exit status: 0 guest reset or powered off, 1 bad
//! input or VMM failure, 2 bad usage, 3 guest kernel panic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use cocoon_vmm::config::{DriveConfig, NetDeviceConfig};
use cocoon_vmm::seccomp::SeccompMode;
use cocoon_vmm::vcpu::VmEvent;
use cocoon_vmm::{GuestExit, RunOptions, VmConfigFile, EXIT_ERROR, EXIT_GUEST_PANIC, EXIT_OK};

#[derive(Parser, Debug)]
#[command(
    name = "cocoon-vmm",
    version,
    about = "Cocoon micro-VMM: boots one micro-VM"
)]
struct Args {
    /// JSON configuration file; flags given as well override its fields.
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// Guest kernel (ELF vmlinux or bzImage).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initramfs.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Extra kernel command line.
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Number of vCPUs (default 1).
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Guest memory in MiB (default 128).
    #[arg(long = "memory-mib", value_name = "M")]
    memory_mib: Option<u64>,
    /// Serial console on stdout.
    #[arg(long)]
    console: bool,
    /// A virtio-blk drive backed by a raw image file (repeatable; the guest
    /// sees them as vda, vdb, ... in this order).
    #[arg(long = "disk", value_name = "PATH[,ro][,id=ID]")]
    disks: Vec<String>,
    /// No virtio-rng device (there is one by default).
    #[arg(long = "no-rng")]
    no_rng: bool,
    /// A virtio-vsock device (guest CID 3) bridged to this Unix socket:
    /// host clients connect here and send `CONNECT <port>\n`; guest
    /// connections to port P go to `PATH_P`.
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
    /// A virtio-net device on an existing TAP device (repeatable; the guest
    /// sees them as eth0, eth1, ... in this order). Without mac=, the MAC
    /// is 02:xx:xx:xx:xx:xx derived from the TAP name. With vhost=on the
    /// host kernel's vhost-net (/dev/vhost-net) moves the frames.
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC][,vhost=on|off]")]
    nets: Vec<String>,
    /// Print VM exit counts when the guest ends.
    #[arg(long)]
    stats: bool,
    /// Seccomp filters on the VMM's threads once the guest runs: `on`
    /// (default; a call outside the allow-list kills the VMM with SIGSYS
    /// and a line on stderr), `log` (allowed, logged by the kernel's
    /// audit), `off`.
    #[arg(long, value_name = "on|log|off")]
    seccomp: Option<SeccompMode>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("cocoon-vmm: error: {msg}");
    std::process::exit(EXIT_ERROR);
}

fn main() {
    let start = Instant::now();
    let args = Args::parse();
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                fail(format_args!("cannot read config {}: {e}", path.display()))
            });
            VmConfigFile::from_json(&text)
                .unwrap_or_else(|e| fail(format_args!("{}: {e}", path.display())))
        }
        None => VmConfigFile::default(),
    };
    let flags = VmConfigFile {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        console: args.console.then_some(true),
        drives: if args.disks.is_empty() {
            None
        } else {
            Some(
                args.disks
                    .iter()
                    .map(|d| DriveConfig::parse_flag(d))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| fail(e)),
            )
        },
        rng: args.no_rng.then_some(false),
        vsock: args.vsock,
        net: if args.nets.is_empty() {
            None
        } else {
            Some(
                args.nets
                    .iter()
                    .map(|n| NetDeviceConfig::parse_flag(n))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_else(|e| fail(e)),
            )
        },
        seccomp: args.seccomp,
    };
    let config = file.merge(flags).validate().unwrap_or_else(|e| fail(e));

    let stats = args.stats;
    let events = Arc::new(move |ev: VmEvent| match ev {
        VmEvent::FirstEntry(t) if stats => {
            eprintln!("cocoon-vmm: first-entry ms={:.1}", t.as_secs_f64() * 1e3)
        }
        VmEvent::InitStarted(t) if stats => {
            eprintln!("cocoon-vmm: init-started ms={:.1}", t.as_secs_f64() * 1e3)
        }
        VmEvent::FirstEntry(_) | VmEvent::InitStarted(_) => {}
        VmEvent::BootComplete(t) => {
            eprintln!("cocoon-vmm: boot-complete ms={:.1}", t.as_secs_f64() * 1e3)
        }
    });
    let opts = RunOptions {
        start,
        console: None,
        events: Some(events),
    };
    let report = cocoon_vmm::run(&config, opts).unwrap_or_else(|e| fail(e));
    if args.stats {
        let ms = |d: Option<std::time::Duration>| {
            d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        let pio: Vec<String> = report
            .pio_exits
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let steps: Vec<String> = report
            .setup_steps
            .iter()
            .map(|(k, d)| format!("{k}={:.1}", d.as_secs_f64() * 1e3))
            .collect();
        eprintln!("cocoon-vmm: setup_ms {}", steps.join(" "));
        eprintln!(
            "cocoon-vmm: stats first_entry_ms={} init_started_ms={} boot_complete_ms={} pio_exits {}",
            ms(report.first_entry),
            ms(report.init_started),
            ms(report.boot_complete),
            pio.join(" ")
        );
    }
    match report.exit {
        GuestExit::Reset => {
            eprintln!("cocoon-vmm: guest reset");
            std::process::exit(EXIT_OK)
        }
        GuestExit::PowerOff => {
            eprintln!("cocoon-vmm: guest powered off");
            std::process::exit(EXIT_OK)
        }
        GuestExit::Panic(why) => {
            eprintln!("cocoon-vmm: guest kernel panic: {why}");
            std::process::exit(EXIT_GUEST_PANIC)
        }
    }
}
