//! VM configuration: the serde structs read from `--config FILE.json` or
//! built from command-line flags, and their validation into a [`VmConfig`]
//! that cannot hold an invalid value. Limits that depend on the host (how
//! many vCPUs KVM allows) are checked later by the builder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::devices::virtio::net::tap::{valid_ifname, MAX_IFNAME};
use crate::devices::virtio::net::{MacAddr, MacError};
use crate::seccomp::SeccompMode;

/// Smallest guest memory we accept; a Linux guest needs a few MiB at least.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest memory we accept (1 TiB); beyond that is a typo.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// x86 Linux's COMMAND_LINE_SIZE, including the terminating NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// APIC ids in the MP table are 8 bits and 0xff is broadcast; one id goes to
/// the IOAPIC.
pub const MAX_VCPUS: u32 = 254;

/// Errors in a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The JSON could not be parsed or had unknown fields.
    #[error("invalid config: {0}")]
    Parse(String),
    /// No kernel was given.
    #[error("no kernel given (--kernel PATH or \"kernel\" in the config)")]
    NoKernel,
    /// vCPU count out of range.
    #[error("vcpus must be between 1 and {MAX_VCPUS}, not {0}")]
    Vcpus(u32),
    /// Memory size out of range.
    #[error("memory_mib must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}, not {0}")]
    Memory(u64),
    /// The kernel command line contains a NUL byte or non-ASCII text.
    #[error("the kernel command line must be printable ASCII")]
    CmdlineChars,
    /// A `--disk` flag could not be parsed.
    #[error("invalid --disk {0:?}: expected PATH[,ro][,id=ID]")]
    DiskFlag(String),
    /// A drive id is too long or has characters other than [A-Za-z0-9._-].
    #[error("drive id {0:?} must be 1-20 characters of [A-Za-z0-9._-]")]
    DriveId(String),
    /// Two drives share an id.
    #[error("two drives have the id {0:?}")]
    DuplicateDriveId(String),
    /// A drive has an empty path.
    #[error("a drive has an empty path")]
    DrivePath,
    /// The vsock socket path is empty.
    #[error("the vsock socket path is empty")]
    VsockPath,
    /// A `--net` flag could not be parsed.
    #[error("invalid --net {0:?}: expected tap=NAME[,mac=MAC][,vhost=on|off]")]
    NetFlag(String),
    /// A TAP name longer than an interface name can be.
    #[error("tap name '{0}' is longer than {MAX_IFNAME} bytes (IFNAMSIZ)")]
    TapNameTooLong(String),
    /// A TAP name that cannot be an interface name.
    #[error("invalid tap name '{0}': 1-{MAX_IFNAME} bytes, no '/', ':' or whitespace")]
    TapName(String),
    /// Two net devices on one TAP.
    #[error("two net devices use tap '{0}'")]
    DuplicateTap(String),
    /// Two net devices with one MAC.
    #[error("two net devices have the MAC address {0}")]
    DuplicateMac(String),
    /// A bad MAC address.
    #[error(transparent)]
    Mac(#[from] MacError),
    /// More devices than the MMIO bus has slots for.
    #[error("{0} virtio devices requested, at most {max} fit", max = crate::devices::mmio_bus::MAX_DEVICES)]
    TooManyDevices(usize),
}

/// A virtio-blk drive as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse writes (default false).
    #[serde(default)]
    pub read_only: bool,
    /// Drive id returned by GET_ID (default `diskN`).
    #[serde(default)]
    pub id: Option<String>,
}

impl DriveConfig {
    /// Parses `PATH[,ro][,id=ID]` (the `--disk` flag).
    pub fn parse_flag(s: &str) -> Result<Self, ConfigError> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ConfigError::DiskFlag(s.to_string()))?;
        let mut d = DriveConfig {
            path: PathBuf::from(path),
            read_only: false,
            id: None,
        };
        for p in parts {
            match p {
                "ro" => d.read_only = true,
                "rw" => d.read_only = false,
                _ => match p.strip_prefix("id=") {
                    Some(id) => d.id = Some(id.to_string()),
                    None => return Err(ConfigError::DiskFlag(s.to_string())),
                },
            }
        }
        Ok(d)
    }
}

/// A virtio-net device as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDeviceConfig {
    /// Name of an existing TAP device (in the VMM's network namespace).
    pub tap: String,
    /// The guest's MAC address (default: 02:xx:xx:xx:xx:xx derived from
    /// the TAP name).
    #[serde(default)]
    pub mac: Option<String>,
    /// Move frames with the host kernel's vhost-net (`/dev/vhost-net`)
    /// instead of the VMM's event loop (default: false).
    #[serde(default)]
    pub vhost: bool,
}

impl NetDeviceConfig {
    /// Parses `tap=NAME[,mac=MAC][,vhost=on|off]` (the `--net` flag).
    pub fn parse_flag(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::NetFlag(s.to_string());
        let mut tap = None;
        let mut mac = None;
        let mut vhost = None;
        for p in s.split(',') {
            match p.split_once('=') {
                Some(("tap", v)) if tap.is_none() => tap = Some(v.to_string()),
                Some(("mac", v)) if mac.is_none() => mac = Some(v.to_string()),
                Some(("vhost", "on")) if vhost.is_none() => vhost = Some(true),
                Some(("vhost", "off")) if vhost.is_none() => vhost = Some(false),
                _ => return Err(bad()),
            }
        }
        Ok(NetDeviceConfig {
            tap: tap.ok_or_else(bad)?,
            mac,
            vhost: vhost.unwrap_or(false),
        })
    }
}

/// A validated net device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    /// TAP name, a valid interface name.
    pub tap: String,
    /// Unicast, non-zero MAC.
    pub mac: MacAddr,
    /// Frames through vhost-net.
    pub vhost: bool,
}

/// A validated drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse writes.
    pub read_only: bool,
    /// Drive id (1-20 characters of [A-Za-z0-9._-]).
    pub id: String,
}

fn valid_id(id: &str) -> bool {
    (1..=20).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The on-disk / on-wire form of a VM configuration. Every field but
/// `kernel` is optional; unknown fields are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfigFile {
    /// Guest kernel: ELF vmlinux or bzImage.
    pub kernel: Option<PathBuf>,
    /// Initramfs (cpio archive) handed to the kernel.
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line, appended to what the VMM needs.
    pub cmdline: Option<String>,
    /// Number of vCPUs (default 1).
    pub vcpus: Option<u32>,
    /// Guest memory in MiB (default 128).
    pub memory_mib: Option<u64>,
    /// Put an 8250 serial console on the VMM's stdout (default false).
    pub console: Option<bool>,
    /// virtio-blk drives, in the order the guest sees them (vda, vdb, ...).
    pub drives: Option<Vec<DriveConfig>>,
    /// A virtio-rng device (default true).
    pub rng: Option<bool>,
    /// A virtio-vsock device (guest CID 3) bridged to this Unix socket.
    pub vsock: Option<PathBuf>,
    /// virtio-net devices on TAPs, in the order the guest sees them
    /// (eth0, eth1, ...).
    pub net: Option<Vec<NetDeviceConfig>>,
    /// Seccomp filters on the VMM's threads: "on" (default), "log" or "off".
    pub seccomp: Option<SeccompMode>,
}

impl VmConfigFile {
    /// Parses a JSON configuration.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Fields set in `other` replace those in `self` (flags over file).
    pub fn merge(self, other: VmConfigFile) -> VmConfigFile {
        VmConfigFile {
            kernel: other.kernel.or(self.kernel),
            initrd: other.initrd.or(self.initrd),
            cmdline: other.cmdline.or(self.cmdline),
            vcpus: other.vcpus.or(self.vcpus),
            memory_mib: other.memory_mib.or(self.memory_mib),
            console: other.console.or(self.console),
            drives: other.drives.or(self.drives),
            rng: other.rng.or(self.rng),
            vsock: other.vsock.or(self.vsock),
            net: other.net.or(self.net),
            seccomp: other.seccomp.or(self.seccomp),
        }
    }

    /// Checks every field and applies defaults.
    pub fn validate(self) -> Result<VmConfig, ConfigError> {
        let kernel = self.kernel.ok_or(ConfigError::NoKernel)?;
        let vcpus = self.vcpus.unwrap_or(1);
        if !(1..=MAX_VCPUS).contains(&vcpus) {
            return Err(ConfigError::Vcpus(vcpus));
        }
        let memory_mib = self.memory_mib.unwrap_or(128);
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
            return Err(ConfigError::Memory(memory_mib));
        }
        let cmdline = self.cmdline.unwrap_or_default();
        if !cmdline.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ConfigError::CmdlineChars);
        }
        let mut drives = Vec::new();
        for (i, d) in self.drives.unwrap_or_default().into_iter().enumerate() {
            if d.path.as_os_str().is_empty() {
                return Err(ConfigError::DrivePath);
            }
            let id = d.id.unwrap_or_else(|| format!("disk{i}"));
            if !valid_id(&id) {
                return Err(ConfigError::DriveId(id));
            }
            if drives.iter().any(|x: &Drive| x.id == id) {
                return Err(ConfigError::DuplicateDriveId(id));
            }
            drives.push(Drive {
                path: d.path,
                read_only: d.read_only,
                id,
            });
        }
        let rng = self.rng.unwrap_or(true);
        if self
            .vsock
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::VsockPath);
        }
        let mut nets: Vec<NetDevice> = Vec::new();
        for n in self.net.unwrap_or_default() {
            if n.tap.len() > MAX_IFNAME {
                return Err(ConfigError::TapNameTooLong(n.tap));
            }
            if !valid_ifname(&n.tap) {
                return Err(ConfigError::TapName(n.tap));
            }
            let mac = match &n.mac {
                Some(m) => MacAddr::parse(m)?,
                None => MacAddr::derived(&n.tap),
            };
            if nets.iter().any(|x| x.tap == n.tap) {
                return Err(ConfigError::DuplicateTap(n.tap));
            }
            if nets.iter().any(|x| x.mac == mac) {
                return Err(ConfigError::DuplicateMac(mac.to_string()));
            }
            nets.push(NetDevice {
                tap: n.tap,
                mac,
                vhost: n.vhost,
            });
        }
        let devices =
            drives.len() + nets.len() + usize::from(rng) + usize::from(self.vsock.is_some());
        if devices > crate::devices::mmio_bus::MAX_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        Ok(VmConfig {
            kernel,
            initrd: self.initrd,
            cmdline,
            vcpus,
            memory_mib,
            console: self.console.unwrap_or(false),
            drives,
            rng,
            vsock: self.vsock,
            nets,
            seccomp: self.seccomp.unwrap_or_default(),
        })
    }
}

/// A validated VM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest kernel: ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Initramfs handed to the kernel.
    pub initrd: Option<PathBuf>,
    /// Extra kernel command line (printable ASCII).
    pub cmdline: String,
    /// Number of vCPUs, 1..=MAX_VCPUS.
    pub vcpus: u32,
    /// Guest memory in MiB, MIN_MEMORY_MIB..=MAX_MEMORY_MIB.
    pub memory_mib: u64,
    /// Serial console on stdout.
    pub console: bool,
    /// virtio-blk drives.
    pub drives: Vec<Drive>,
    /// virtio-rng device.
    pub rng: bool,
    /// virtio-vsock host socket.
    pub vsock: Option<PathBuf>,
    /// virtio-net devices.
    pub nets: Vec<NetDevice>,
    /// Seccomp filters on the VMM's threads.
    pub seccomp: SeccompMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = VmConfigFile::from_json(r#"{"kernel": "/k", "vcpu": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `vcpu`"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let c = VmConfigFile::from_json(r#"{"kernel": "/k"}"#)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!((c.vcpus, c.memory_mib, c.console), (1, 128, false));
        assert_eq!(c.seccomp, SeccompMode::On);
    }

    #[test]
    fn seccomp_mode_in_json() {
        for (text, mode) in [
            ("on", SeccompMode::On),
            ("log", SeccompMode::Log),
            ("off", SeccompMode::Off),
        ] {
            let json = format!(r#"{{"kernel": "/k", "seccomp": "{text}"}}"#);
            let c = VmConfigFile::from_json(&json).unwrap().validate().unwrap();
            assert_eq!(c.seccomp, mode);
        }
        let err = VmConfigFile::from_json(r#"{"kernel": "/k", "seccomp": "strict"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `strict`, expected one of `on`, `log`, `off`"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_file() {
        let file = VmConfigFile::from_json(r#"{"kernel": "/k", "vcpus": 2}"#).unwrap();
        let flags = VmConfigFile {
            vcpus: Some(4),
            ..Default::default()
        };
        let c = file.merge(flags).validate().unwrap();
        assert_eq!(c.vcpus, 4);
        assert_eq!(c.kernel, PathBuf::from("/k"));
    }

    #[test]
    fn disk_flags_parse() {
        let d = DriveConfig::parse_flag("/img,ro,id=root").unwrap();
        assert_eq!(
            d,
            DriveConfig {
                path: "/img".into(),
                read_only: true,
                id: Some("root".into())
            }
        );
        assert!(DriveConfig::parse_flag(",ro").is_err());
        assert!(DriveConfig::parse_flag("/img,fast").is_err());
    }

    #[test]
    fn net_flags_parse() {
        assert_eq!(
            NetDeviceConfig::parse_flag("tap=cctap0,mac=02:00:00:00:00:01").unwrap(),
            NetDeviceConfig {
                tap: "cctap0".into(),
                mac: Some("02:00:00:00:00:01".into()),
                vhost: false,
            }
        );
        assert_eq!(
            NetDeviceConfig::parse_flag("tap=t").unwrap().mac,
            None,
            "mac is optional"
        );
        assert!(NetDeviceConfig::parse_flag("vhost=on,tap=t").unwrap().vhost);
        assert!(
            !NetDeviceConfig::parse_flag("tap=t,vhost=off")
                .unwrap()
                .vhost
        );
        for bad in [
            "",
            "cctap0",
            "mac=02:00:00:00:00:01",
            "tap=a,tap=b",
            "tap=a,fast",
            "tap=a,vhost=yes",
            "tap=a,vhost",
            "tap=a,vhost=on,vhost=off",
        ] {
            assert_eq!(
                NetDeviceConfig::parse_flag(bad),
                Err(ConfigError::NetFlag(bad.into()))
            );
        }
    }

    #[test]
    fn nets_are_validated() {
        let base = |net| VmConfigFile {
            kernel: Some("/k".into()),
            net: Some(net),
            ..Default::default()
        };
        let n = |tap: &str, mac: Option<&str>| NetDeviceConfig {
            tap: tap.into(),
            mac: mac.map(Into::into),
            vhost: false,
        };
        let c = base(vec![
            n("cctap0", None),
            n("cctap1", Some("02:00:00:00:00:07")),
        ])
        .validate()
        .unwrap();
        assert_eq!(c.nets[0].mac, MacAddr::derived("cctap0"));
        assert_eq!(c.nets[1].mac.to_string(), "02:00:00:00:00:07");
        assert_eq!(
            base(vec![n(&"t".repeat(16), None)]).validate(),
            Err(ConfigError::TapNameTooLong("t".repeat(16)))
        );
        assert_eq!(
            base(vec![n("a/b", None)]).validate(),
            Err(ConfigError::TapName("a/b".into()))
        );
        assert_eq!(
            base(vec![n("", None)]).validate(),
            Err(ConfigError::TapName(String::new()))
        );
        assert!(matches!(
            base(vec![n("t", Some("01:00:00:00:00:01"))]).validate(),
            Err(ConfigError::Mac(MacError::Multicast(_)))
        ));
        assert_eq!(
            base(vec![n("t", None), n("t", None)]).validate(),
            Err(ConfigError::DuplicateTap("t".into()))
        );
        let mac = Some("02:00:00:00:00:01");
        assert!(matches!(
            base(vec![n("a", mac), n("b", mac)]).validate(),
            Err(ConfigError::DuplicateMac(_))
        ));
        let json = r#"{"kernel": "/k", "net": [{"tap": "t0", "mac": "02:00:00:00:00:02"}]}"#;
        let c = VmConfigFile::from_json(json).unwrap().validate().unwrap();
        assert_eq!(c.nets.len(), 1);
        let err = VmConfigFile::from_json(r#"{"kernel": "/k", "net": [{"tap": "t0", "ip": "x"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `ip`"), "{err}");
    }

    #[test]
    fn drives_are_validated() {
        let base = |drives| VmConfigFile {
            kernel: Some("/k".into()),
            drives: Some(drives),
            ..Default::default()
        };
        let d = |id: &str| DriveConfig {
            path: "/img".into(),
            read_only: false,
            id: Some(id.into()),
        };
        assert_eq!(
            base(vec![d("a"), d("a")]).validate(),
            Err(ConfigError::DuplicateDriveId("a".into()))
        );
        assert_eq!(
            base(vec![d(&"x".repeat(21))]).validate(),
            Err(ConfigError::DriveId("x".repeat(21)))
        );
        assert_eq!(
            base(vec![d("a b")]).validate(),
            Err(ConfigError::DriveId("a b".into()))
        );
        let many: Vec<DriveConfig> = (0..19).map(|i| d(&format!("d{i}"))).collect();
        assert_eq!(base(many).validate(), Err(ConfigError::TooManyDevices(20)));
        let c = base(vec![DriveConfig {
            path: "/img".into(),
            read_only: true,
            id: None,
        }])
        .validate()
        .unwrap();
        assert_eq!(c.drives[0].id, "disk0");
        assert!(c.rng);
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let base = || VmConfigFile {
            kernel: Some("/k".into()),
            ..Default::default()
        };
        assert_eq!(
            VmConfigFile {
                vcpus: Some(0),
                ..base()
            }
            .validate(),
            Err(ConfigError::Vcpus(0))
        );
        assert_eq!(
            VmConfigFile {
                vcpus: Some(255),
                ..base()
            }
            .validate(),
            Err(ConfigError::Vcpus(255))
        );
        assert_eq!(
            VmConfigFile {
                memory_mib: Some(1),
                ..base()
            }
            .validate(),
            Err(ConfigError::Memory(1))
        );
        assert_eq!(
            VmConfigFile {
                cmdline: Some("a\u{0}b".into()),
                ..base()
            }
            .validate(),
            Err(ConfigError::CmdlineChars)
        );
        assert_eq!(
            VmConfigFile::default().validate(),
            Err(ConfigError::NoKernel)
        );
    }
}
