//! VM configuration: the serde structs read from `--config FILE.json` or
//! built from command-line flags, and their validation into a [`VmConfig`]
//! that cannot hold an invalid value. Limits that depend on the host (how
//! many vCPUs KVM allows) are checked later by the builder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// The command line contains a NUL byte or non-ASCII text.
    #[error("the kernel command line must be printable ASCII")]
    CmdlineChars,
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
        Ok(VmConfig {
            kernel,
            initrd: self.initrd,
            cmdline,
            vcpus,
            memory_mib,
            console: self.console.unwrap_or(false),
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
