//! The parts of an image configuration Cocoon keeps: the default process
//! (Entrypoint, Cmd, Env, WorkingDir, User), the platform, and the layer
//! diff IDs used to check unpacked layers.
//!
//! The configuration blob itself stays in the store untouched; this module
//! only parses it (OCI and Docker configurations share the fields used here)
//! and does not decide how a sandbox overrides these defaults.

use serde::{Deserialize, Serialize};

use super::digest::{Digest, DigestError};

/// Errors from parsing an image configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The blob is not a JSON image configuration.
    #[error("image config {digest} is not a valid image configuration: {source}")]
    Parse {
        /// The config blob.
        digest: Digest,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A diff ID is not a digest.
    #[error("image config {digest} has a bad diff_id {value:?}: {source}")]
    DiffId {
        /// The config blob.
        digest: Digest,
        /// The offending value (cut to 200 characters).
        value: String,
        /// Why it is not a digest.
        source: DigestError,
    },
    /// `rootfs.type` is not `layers`.
    #[error("image config {digest} has rootfs type {value:?}, expected \"layers\"")]
    RootfsType {
        /// The config blob.
        digest: Digest,
        /// The type found.
        value: String,
    },
}

/// The process an image runs when the sandbox does not say otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultProcess {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`; `/` when the image leaves it empty.
    pub working_dir: String,
    /// `User` (`uid`, `uid:gid`, `name`, or `name:group`); empty means root.
    pub user: String,
}

impl DefaultProcess {
    /// The command line: Entrypoint followed by Cmd, as Docker does when
    /// the user gives no arguments.
    pub fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The command line when the user gives `user_args`: they replace Cmd
    /// and follow Entrypoint.
    pub fn args_with(&self, user_args: &[String]) -> Vec<String> {
        if user_args.is_empty() {
            return self.args();
        }
        self.entrypoint.iter().chain(user_args).cloned().collect()
    }
}

/// What Cocoon keeps from an image configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `created`, as written by the image builder (RFC 3339), if any.
    pub created: Option<String>,
    /// The default process.
    pub process: DefaultProcess,
    /// `rootfs.diff_ids`: the digest of each layer once decompressed.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses the configuration blob `bytes` whose digest is `digest`.
    pub fn parse(digest: &Digest, bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        let raw: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|source| ConfigError::Parse {
                digest: digest.clone(),
                source,
            })?;
        if raw.rootfs().typ() != "layers" {
            return Err(ConfigError::RootfsType {
                digest: digest.clone(),
                value: raw.rootfs().typ().chars().take(64).collect(),
            });
        }
        let diff_ids = raw
            .rootfs()
            .diff_ids()
            .iter()
            .map(|v| {
                v.parse().map_err(|source| ConfigError::DiffId {
                    digest: digest.clone(),
                    value: v.chars().take(200).collect(),
                    source,
                })
            })
            .collect::<Result<Vec<Digest>, _>>()?;
        let process = match raw.config() {
            Some(c) => DefaultProcess {
                entrypoint: c.entrypoint().clone().unwrap_or_default(),
                cmd: c.cmd().clone().unwrap_or_default(),
                env: c.env().clone().unwrap_or_default(),
                working_dir: c
                    .working_dir()
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".to_owned()),
                user: c.user().clone().unwrap_or_default(),
            },
            None => DefaultProcess {
                working_dir: "/".to_owned(),
                ..DefaultProcess::default()
            },
        };
        Ok(ImageConfig {
            os: raw.os().to_string(),
            architecture: raw.architecture().to_string(),
            created: raw.created().clone(),
            process,
            diff_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::sha256_of(b"cfg")
    }

    #[test]
    fn keeps_the_default_process() {
        let json = br#"{
            "architecture": "amd64", "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Entrypoint": ["/bin/tini", "--"], "Cmd": ["sh", "-c", "echo hi"],
                "Env": ["PATH=/usr/bin:/bin", "A=b"], "WorkingDir": "/srv",
                "User": "1000:1000", "ExposedPorts": {"80/tcp": {}},
                "Volumes": {"/data": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": [
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
            "history": [{"created_by": "x"}]
        }"#;
        let c = ImageConfig::parse(&digest(), json).unwrap();
        assert_eq!(c.os, "linux");
        assert_eq!(c.architecture, "amd64");
        assert_eq!(c.process.args(), ["/bin/tini", "--", "sh", "-c", "echo hi"]);
        assert_eq!(
            c.process.args_with(&["true".to_owned()]),
            ["/bin/tini", "--", "true"]
        );
        assert_eq!(c.process.working_dir, "/srv");
        assert_eq!(c.process.user, "1000:1000");
        assert_eq!(c.process.env.len(), 2);
        assert_eq!(c.diff_ids.len(), 1);
    }

    #[test]
    fn missing_config_section_means_root_in_slash() {
        let json =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::parse(&digest(), json).unwrap();
        assert_eq!(c.process.working_dir, "/");
        assert!(c.process.args().is_empty());
    }

    #[test]
    fn refuses_garbage_and_bad_diff_ids() {
        assert!(matches!(
            ImageConfig::parse(&digest(), b"not json"),
            Err(ConfigError::Parse { .. })
        ));
        let json = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}"#;
        assert!(matches!(
            ImageConfig::parse(&digest(), json),
            Err(ConfigError::DiffId { .. })
        ));
    }
}
