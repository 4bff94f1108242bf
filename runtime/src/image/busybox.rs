//! The built-in `busybox` image: one layer made from the host's static
//! busybox (Debian's `busybox-static`, `/bin/busybox`) with a symlink per
//! applet, so demos and tests run with no registry.
//!
//! It only assembles the image in memory; importing it goes through the same
//! path as any other image (see [`super::Images::import_busybox`]). It does
//! not install the package.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::build::{BuiltImage, BuiltLayer, ImageBuilder};
use super::config::DefaultProcess;
use super::unpack::Compression;

/// Where Debian's `busybox-static` installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// The name the built-in image is tagged with.
pub const BUSYBOX_IMAGE: &str = "busybox:latest";

/// Errors from building the busybox image.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// The binary cannot be read.
    #[error("reading {path} (install Debian package busybox-static): {source}")]
    Read {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `busybox --list-full` failed.
    #[error("{path} --list-full failed: {reason}")]
    List {
        /// The binary.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// Writing the layer tar failed.
    #[error("assembling the busybox layer: {0}")]
    Tar(io::Error),
}

/// Builds the image from the busybox binary at `busybox`.
pub fn busybox_image(busybox: &Path) -> Result<BuiltImage, BusyboxError> {
    let binary = fs::read(busybox).map_err(|source| BusyboxError::Read {
        path: busybox.to_owned(),
        source,
    })?;
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| BusyboxError::List {
            path: busybox.to_owned(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BusyboxError::List {
            path: busybox.to_owned(),
            reason: out.status.to_string(),
        });
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<&str> = listing
        .lines()
        .map(str::trim)
        // Only applets in the usual bin directories; `linuxrc` and the
        // like are not for containers.
        .filter(|l| {
            ["bin/", "sbin/", "usr/bin/", "usr/sbin/"].iter().any(|d| {
                l.strip_prefix(d)
                    .is_some_and(|n| !n.is_empty() && !n.contains('/'))
            })
        })
        .filter(|l| *l != "bin/busybox")
        .collect();
    applets.sort_unstable();
    applets.dedup();

    let tar = layer_tar(&binary, &applets).map_err(BusyboxError::Tar)?;
    let layer = BuiltLayer::new(tar, Compression::Gzip).map_err(BusyboxError::Tar)?;
    Ok(ImageBuilder::new()
        .layer(layer)
        .process(DefaultProcess {
            cmd: vec!["sh".to_owned()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ],
            working_dir: "/".to_owned(),
            ..DefaultProcess::default()
        })
        .build())
}

fn layer_tar(binary: &[u8], applets: &[&str]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let dirs: &[(&str, u32)] = &[
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ];
    for (path, mode) in dirs {
        let mut h = header(tar::EntryType::Directory, *mode, 0);
        tar.append_data(&mut h, path, io::empty())?;
    }
    let files: &[(&str, u32, &[u8])] = &[
        ("bin/busybox", 0o755, binary),
        (
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n"),
        (
            "etc/hosts",
            0o644,
            b"127.0.0.1\tlocalhost\n::1\tlocalhost\n",
        ),
    ];
    for (path, mode, data) in files {
        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
        tar.append_data(&mut h, path, *data)?;
    }
    for applet in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, applet, "/bin/busybox")?;
    }
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // A fixed time keeps the image, and so its digest and disk, the same
    // for the same binary.
    h.set_mtime(0);
    h
}
