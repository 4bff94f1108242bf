//! Turns an unpacked root filesystem tree into a read-only disk image
//! (`mkfs.erofs` or `mkfs.ext4 -d`), and creates the sparse, writable ext4
//! scratch disk each sandbox gets.
//!
//! Both are written to a path the caller chose (for root disks, a temporary
//! file in the store that is renamed into place once complete). This module
//! does not unpack layers, cache disks or decide where they live; it only
//! runs the formatting tools, which come from Debian's `e2fsprogs` and
//! `erofs-utils` packages.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// Smallest scratch disk: ext4 with a journal needs a few MiB to be useful.
pub const MIN_SCRATCH_BYTES: u64 = 16 << 20;
/// Largest scratch disk (ext4 with 4 KiB blocks tops out far above this).
pub const MAX_SCRATCH_BYTES: u64 = 16 << 40;

/// Errors from building disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A formatting tool is not installed.
    #[error("{tool} not found (install Debian package {package})")]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// The package that has it.
        package: &'static str,
    },
    /// A formatting tool failed.
    #[error("{tool} failed ({status}) building {path}: {stderr}")]
    ToolFailed {
        /// The program.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// The disk being built.
        path: PathBuf,
        /// The end of its error output.
        stderr: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A requested scratch size is outside what Cocoon accepts.
    #[error("scratch disk size {size} bytes is outside {MIN_SCRATCH_BYTES}..={MAX_SCRATCH_BYTES}")]
    BadSize {
        /// The requested size.
        size: u64,
    },
    /// A format name is unknown.
    #[error("unknown disk format {0:?} (expected erofs or ext4)")]
    UnknownFormat(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The file system of a root disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// erofs, uncompressed: read-only by design, no size to guess, fastest
    /// to build. See docs/images.md for the measurement behind the default.
    Erofs,
    /// ext4 without a journal, built with `mkfs.ext4 -d`.
    Ext4,
}

impl DiskFormat {
    /// The format used unless asked otherwise.
    pub const DEFAULT: DiskFormat = DiskFormat::Erofs;
    /// Every format, for garbage collection.
    pub const ALL: [DiskFormat; 2] = [DiskFormat::Erofs, DiskFormat::Ext4];

    /// File extension of disks in this format (also its name).
    pub fn ext(self) -> &'static str {
        match self {
            DiskFormat::Erofs => "erofs",
            DiskFormat::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ext())
    }
}

impl FromStr for DiskFormat {
    type Err = DiskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "erofs" => Ok(DiskFormat::Erofs),
            "ext4" => Ok(DiskFormat::Ext4),
            other => Err(DiskError::UnknownFormat(other.chars().take(64).collect())),
        }
    }
}

/// Space a tree needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// File data rounded up to 4 KiB blocks, plus a block per directory.
    pub bytes: u64,
    /// Inodes (files, directories, links, nodes; hard links count once).
    pub inodes: u64,
}

/// Measures `tree` without following symlinks.
pub fn tree_usage(tree: &Path) -> Result<TreeUsage, DiskError> {
    let mut usage = TreeUsage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![tree.to_owned()];
    while let Some(dir) = stack.pop() {
        usage.inodes += 1;
        usage.bytes += 4096;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let meta = entry.metadata().map_err(io_err("stat", &entry.path()))?;
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += meta.len().div_ceil(4096) * 4096;
        }
    }
    Ok(usage)
}

/// Builds a read-only disk image of `tree` at `out` (created or truncated).
pub fn build_root_disk(tree: &Path, out: &Path, format: DiskFormat) -> Result<(), DiskError> {
    match format {
        DiskFormat::Erofs => build_erofs(tree, out),
        DiskFormat::Ext4 => build_ext4(tree, out),
    }
}

fn build_erofs(tree: &Path, out: &Path) -> Result<(), DiskError> {
    let tool = find_tool("mkfs.erofs").ok_or(DiskError::ToolMissing {
        tool: "mkfs.erofs",
        package: "erofs-utils",
    })?;
    let mut cmd = Command::new(tool);
    cmd.arg("--quiet").arg(out).arg(tree);
    run("mkfs.erofs", cmd, out)
}

fn build_ext4(tree: &Path, out: &Path) -> Result<(), DiskError> {
    let tool = find_tool("mkfs.ext4").ok_or(DiskError::ToolMissing {
        tool: "mkfs.ext4",
        package: "e2fsprogs",
    })?;
    let usage = tree_usage(tree)?;
    // Data, inode tables (256 bytes each), bitmaps and group descriptors,
    // plus a margin; a failed guess doubles the size and tries again.
    let inodes = usage.inodes + usage.inodes / 8 + 64;
    let mut size = (usage.bytes + inodes * 256) * 11 / 10 + (8 << 20);
    size = size.div_ceil(1 << 20) << 20;
    for attempt in 0..4 {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(out)
            .map_err(io_err("create", out))?;
        file.set_len(size).map_err(io_err("truncate", out))?;
        drop(file);
        let mut cmd = Command::new(&tool);
        cmd.args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
        ])
        .args(["-O", "^has_journal,^resize_inode"])
        .args(["-E", "nodiscard"])
        .arg("-N")
        .arg(inodes.to_string())
        .args(["-L", "cocoon-image", "-d"])
        .arg(tree)
        .arg(out);
        match run("mkfs.ext4", cmd, out) {
            Ok(()) => return Ok(()),
            Err(DiskError::ToolFailed { stderr, .. })
                if attempt < 3
                    && (stderr.contains("Could not allocate")
                        || stderr.contains("No space left")
                        || stderr.contains("inode")) =>
            {
                tracing::debug!(size, "ext4 image too small, doubling");
                size *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Err(DiskError::ToolFailed {
        tool: "mkfs.ext4",
        status: "size".into(),
        path: out.to_owned(),
        stderr: "tree does not fit after 4 attempts".into(),
    })
}

/// Creates a sparse, writable ext4 disk of `size` bytes at `path` (which
/// must not exist). The file appears only once formatted.
pub fn create_scratch_disk(path: &Path, size: u64) -> Result<(), DiskError> {
    if !(MIN_SCRATCH_BYTES..=MAX_SCRATCH_BYTES).contains(&size) {
        return Err(DiskError::BadSize { size });
    }
    let tool = find_tool("mkfs.ext4").ok_or(DiskError::ToolMissing {
        tool: "mkfs.ext4",
        package: "e2fsprogs",
    })?;
    let size = size.div_ceil(4096) * 4096;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let result = (|| {
        file.set_len(size).map_err(io_err("truncate", &tmp))?;
        let mut cmd = Command::new(&tool);
        // Lazy init keeps the file sparse; the guest kernel finishes the
        // inode tables in the background on first mount.
        cmd.args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "cocoon-scratch"])
            .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
            .arg(&tmp);
        run("mkfs.ext4", cmd, &tmp)?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        // link(2), unlike rename(2), refuses to replace an existing disk.
        fs::hard_link(&tmp, path).map_err(io_err("link into", path))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", parent))
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn run(tool: &'static str, mut cmd: Command, out: &Path) -> Result<(), DiskError> {
    let output = cmd.output().map_err(io_err("run", Path::new(tool)))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = format!("{}{}", stderr.trim(), stdout.trim());
    let tail: String = text
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(DiskError::ToolFailed {
        tool,
        status: output.status.to_string(),
        path: out.to_owned(),
        stderr: tail,
    })
}

/// Finds a program in `PATH` or the sbin directories (which a non-login
/// root shell may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!("erofs".parse::<DiskFormat>().unwrap(), DiskFormat::Erofs);
        assert_eq!("ext4".parse::<DiskFormat>().unwrap(), DiskFormat::Ext4);
        assert!("xfs".parse::<DiskFormat>().is_err());
    }

    #[test]
    fn scratch_disk_is_sparse_ext4_of_the_asked_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scratch.ext4");
        create_scratch_disk(&path, 64 << 20).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 16 << 20,
            "not sparse: {} blocks",
            meta.blocks()
        );
        // The ext4 superblock magic at offset 1024 + 0x38.
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        assert!(
            create_scratch_disk(&path, 64 << 20).is_err(),
            "overwrote an existing disk"
        );
        assert!(matches!(
            create_scratch_disk(&dir.path().join("x"), 1 << 20),
            Err(DiskError::BadSize { .. })
        ));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "left a temporary file"
        );
    }
}
