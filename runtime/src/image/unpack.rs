//! Applies image layers to a root filesystem tree with the semantics of the
//! OCI image spec: gzip, zstd and plain tar layers; whiteouts (`.wh.<name>`)
//! and opaque directories (`.wh..wh..opq`); regular files, directories, hard
//! links, symlinks, device nodes and FIFOs, with ownership, modes, xattrs and
//! timestamps.
//!
//! Layers are hostile. Every path is resolved component by component from an
//! open descriptor of the root with `openat(O_NOFOLLOW | O_DIRECTORY)`, and
//! every change is made with a `*at` call on the parent's descriptor that does
//! not follow a final symlink, so nothing can be written, removed, linked or
//! chown'ed outside the tree: `..` components and absolute paths are refused,
//! and so is a path whose parent is a symlink (Cocoon does not resolve
//! symlinks inside the root the way `chroot` would; layers produced by image
//! builders never need it). Each layer's uncompressed stream is checked
//! against its diff ID from the image config.
//!
//! This module does not read blobs from the store, does not choose which
//! layers to apply, and does not build disks; it changes one directory tree.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::digest::{Algorithm, Digest, HashingReader};

/// Longest entry path accepted: Linux's `PATH_MAX`. It bounds the depth of
/// the tree, and so the recursion when removing directories.
const MAX_PATH: usize = 4096;

/// Errors from applying a layer. Each names the layer and, when one is to
/// blame, the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry tries something Cocoon never does (escape the root, go
    /// through a symlink, an unknown entry type...).
    #[error("layer {layer}: entry {path:?} refused: {reason}")]
    Refused {
        /// The layer blob.
        layer: Digest,
        /// The entry's path as written in the layer (lossy UTF-8).
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A file system operation on the tree failed.
    #[error("layer {layer}: entry {path:?}: {op}: {source}")]
    Io {
        /// The layer blob.
        layer: Digest,
        /// The entry's path.
        path: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The uncompressed stream is not a valid tar archive.
    #[error("layer {layer} is not a valid tar archive: {source}")]
    NotTar {
        /// The layer blob.
        layer: Digest,
        /// The tar reader's complaint.
        source: io::Error,
    },
    /// The compressed stream is corrupt or truncated, or the blob could not
    /// be read.
    #[error("layer {layer}: {compression} stream is corrupt or truncated: {message}")]
    Decompress {
        /// The layer blob.
        layer: Digest,
        /// `gzip`, `zstd` or `uncompressed`.
        compression: &'static str,
        /// The decoder's complaint.
        message: String,
    },
    /// The uncompressed layer is not what the image config announced.
    #[error("layer {layer} decompresses to {actual}, but the image config says {expected}")]
    DiffId {
        /// The layer blob.
        layer: Digest,
        /// The diff ID in the config.
        expected: Digest,
        /// The digest of the uncompressed stream.
        actual: Digest,
    },
    /// The root directory cannot be opened.
    #[error("opening root directory {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// How a layer blob is compressed, told from its first bytes (media types
/// are checked by the caller, but the bytes decide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl Compression {
    /// Recognises gzip and zstd magic numbers; anything else is taken as tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// What applying a layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
    /// Bytes of the uncompressed stream.
    pub tar_bytes: u64,
}

/// A root filesystem tree being assembled, held open by descriptor.
pub struct Rootfs {
    root: OwnedFd,
}

impl Rootfs {
    /// Opens the (existing) directory `path` as the root of the tree.
    pub fn open(path: &Path) -> Result<Rootfs, UnpackError> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Root {
            path: path.to_owned(),
            source: e.into(),
        })?;
        Ok(Rootfs { root })
    }

    /// Applies the layer blob `blob` (named `layer` in errors) on top of the
    /// tree. When `diff_id` is given, the uncompressed stream must hash to it.
    /// On error the tree is left half-changed: callers throw it away.
    pub fn apply_layer<'r, R: Read + 'r>(
        &self,
        layer: &Digest,
        blob: R,
        diff_id: Option<&Digest>,
    ) -> Result<LayerStats, UnpackError> {
        let mut blob = BufReader::with_capacity(256 * 1024, blob);
        let failure: Rc<RefCell<Option<String>>> = Rc::default();
        let head = blob.fill_buf().map_err(|e| UnpackError::Decompress {
            layer: layer.clone(),
            compression: "uncompressed",
            message: e.to_string(),
        })?;
        let compression = Compression::sniff(head);
        let decoder: Box<dyn Read + 'r> = match compression {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(blob).map_err(|e| {
                    UnpackError::Decompress {
                        layer: layer.clone(),
                        compression: "zstd",
                        message: e.to_string(),
                    }
                })?)
            }
        };
        let tracked = Tracked {
            inner: decoder,
            failure: failure.clone(),
        };
        let alg = diff_id.map_or(Algorithm::Sha256, Digest::algorithm);
        let mut archive = tar::Archive::new(HashingReader::new(tracked, alg));

        let mut cx = Layer {
            root: self.root.as_fd(),
            digest: layer,
            written: HashSet::new(),
            keep: HashSet::new(),
            dir_times: Vec::new(),
        };
        // A read error is the decoder's when it recorded one, else tar's.
        let stream_error = |source: io::Error| match failure.borrow_mut().take() {
            Some(message) => UnpackError::Decompress {
                layer: layer.clone(),
                compression: compression.name(),
                message,
            },
            None => UnpackError::NotTar {
                layer: layer.clone(),
                source,
            },
        };
        let mut stats = LayerStats::default();
        {
            let entries = archive.entries().map_err(stream_error)?;
            for entry in entries {
                let mut entry = entry.map_err(stream_error)?;
                stats.entries += 1;
                cx.apply_entry(&mut entry).map_err(|e| match e {
                    EntryError::Stream(source) => stream_error(source),
                    EntryError::Unpack(u) => u,
                })?;
            }
        }
        // Read to the end of the compressed stream: the gzip trailer (CRC,
        // length) and the tar padding are part of what the diff ID covers.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(stream_error)?;
        cx.apply_dir_times()?;
        let (actual, n) = rest.finish();
        stats.tar_bytes = n;
        if let Some(expected) = diff_id {
            if &actual != expected {
                return Err(UnpackError::DiffId {
                    layer: layer.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(stats)
    }
}

/// Remembers the first error of the decoder (or blob read) below tar, so a
/// failure can be blamed on the right layer of the stream.
struct Tracked<'r> {
    inner: Box<dyn Read + 'r>,
    failure: Rc<RefCell<Option<String>>>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let mut slot = self.failure.borrow_mut();
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        })
    }
}

enum EntryError {
    /// Reading the entry's data from the stream failed.
    Stream(io::Error),
    Unpack(UnpackError),
}

impl From<UnpackError> for EntryError {
    fn from(e: UnpackError) -> Self {
        EntryError::Unpack(e)
    }
}

/// A validated entry path: components that are plain names.
type Components = Vec<Vec<u8>>;

/// Splits an entry path into plain components: `.` and empty ones are
/// dropped, `..`, a leading `/` and NUL are refused.
fn parse_path(raw: &[u8]) -> Result<Components, &'static str> {
    if raw.len() > MAX_PATH {
        return Err("path longer than PATH_MAX");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("NUL in path");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' component"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(c: &[u8]) -> &OsStr {
    OsStr::from_bytes(c)
}

/// Metadata of an entry, taken from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Timespec,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// State of one layer being applied.
struct Layer<'a> {
    root: BorrowedFd<'a>,
    digest: &'a Digest,
    /// Paths this layer created or replaced.
    written: HashSet<Vec<u8>>,
    /// `written` plus all their ancestors: what an opaque directory or
    /// whiteout in this layer must not remove.
    keep: HashSet<Vec<u8>>,
    /// Directory times, set once the layer is done (writing into a
    /// directory changes its mtime).
    dir_times: Vec<(Components, Timestamps)>,
}

impl Layer<'_> {
    fn refused(&self, raw: &[u8], reason: &'static str) -> UnpackError {
        UnpackError::Refused {
            layer: self.digest.clone(),
            path: String::from_utf8_lossy(raw).into_owned(),
            reason,
        }
    }

    fn io(&self, raw: &[u8], op: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        let path = String::from_utf8_lossy(raw).into_owned();
        move |e| UnpackError::Io {
            layer: self.digest.clone(),
            path,
            op,
            source: e.into(),
        }
    }

    fn mark_written(&mut self, comps: &[Vec<u8>]) {
        self.written.insert(join(comps));
        for i in 0..=comps.len() {
            self.keep.insert(join(&comps[..i]));
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), EntryError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let comps = parse_path(&raw).map_err(|r| self.refused(&raw, r))?;
        if comps[..comps.len().saturating_sub(1)]
            .iter()
            .any(|c| c.starts_with(b".wh."))
        {
            return Err(self.refused(&raw, "whiteout used as a directory").into());
        }
        let Some((name, parent_comps)) = comps.split_last() else {
            // The root itself ("./"): only its metadata can change.
            if kind != tar::EntryType::Directory {
                return Err(self
                    .refused(&raw, "entry would replace the root directory")
                    .into());
            }
            let meta = self.meta(entry, &raw)?;
            let root = rustix::io::dup(self.root).map_err(self.io(&raw, "dup root"))?;
            self.set_dir_meta(&root, &meta, &raw)?;
            self.dir_times.push((Vec::new(), times(&meta)));
            return Ok(());
        };

        if let Some(target) = name.strip_prefix(b".wh.") {
            return self
                .whiteout(parent_comps, target, &raw)
                .map_err(Into::into);
        }

        let parent = self.walk(parent_comps, true, &raw)?;
        let name = name.clone();
        match kind {
            tar::EntryType::Directory => {
                let meta = self.meta(entry, &raw)?;
                let existing = self.stat(&parent, &name, &raw)?;
                if !matches!(existing, Some(t) if t.is_dir()) {
                    if existing.is_some() {
                        self.remove_any(&parent, &name, &raw)?;
                    }
                    rustix::fs::mkdirat(&parent, os(&name), Mode::from_raw_mode(0o700))
                        .map_err(self.io(&raw, "mkdir"))?;
                }
                let dir = self.open_dir(&parent, &name, &raw)?;
                self.set_dir_meta(&dir, &meta, &raw)?;
                self.dir_times.push((comps.clone(), times(&meta)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let meta = self.meta(entry, &raw)?;
                self.clear(&parent, &name, &raw)?;
                let fd = rustix::fs::openat(
                    &parent,
                    os(&name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(self.io(&raw, "create file"))?;
                let mut file = File::from(fd);
                self.copy_data(entry, &mut file, &raw)?;
                rustix::fs::fchown(&file, Some(uid(meta.uid)), Some(gid(meta.gid)))
                    .map_err(self.io(&raw, "chown"))?;
                // After chown, which clears set-user-ID bits.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                    .map_err(self.io(&raw, "chmod"))?;
                for (k, v) in &meta.xattrs {
                    rustix::fs::fsetxattr(&file, os(k), v, XattrFlags::empty())
                        .map_err(self.io(&raw, "setxattr"))?;
                }
                rustix::fs::futimens(&file, &times(&meta)).map_err(self.io(&raw, "set times"))?;
            }
            tar::EntryType::Symlink => {
                let meta = self.meta(entry, &raw)?;
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .filter(|t| !t.is_empty() && !t.contains(&0))
                    .ok_or_else(|| self.refused(&raw, "symlink without a valid target"))?;
                self.clear(&parent, &name, &raw)?;
                // The target is stored as written: it may point anywhere,
                // since nothing here ever follows it.
                rustix::fs::symlinkat(os(&target), &parent, os(&name))
                    .map_err(self.io(&raw, "symlink"))?;
                self.chown_by_name(&parent, &name, &meta, &raw)?;
                self.set_xattrs_nofollow(&parent, &name, &meta, &raw)?;
                rustix::fs::utimensat(&parent, os(&name), &times(&meta), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.io(&raw, "set times"))?;
            }
            tar::EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.refused(&raw, "hard link without a target"))?;
                let target = parse_path(&target_raw).map_err(|r| self.refused(&target_raw, r))?;
                let Some((tname, tparent_comps)) = target.split_last() else {
                    return Err(self.refused(&raw, "hard link to the root directory").into());
                };
                if target == comps {
                    return Ok(()); // a link to itself: already there
                }
                let tparent = self.walk(tparent_comps, false, &target_raw)?;
                match self.stat(&tparent, tname, &target_raw)? {
                    None => {
                        return Err(self.refused(&raw, "hard link target does not exist").into())
                    }
                    Some(t) if t.is_dir() => {
                        return Err(self.refused(&raw, "hard link to a directory").into())
                    }
                    Some(_) => {}
                }
                self.clear(&parent, &name, &raw)?;
                // Flags 0: link the target itself, even when it is a symlink.
                rustix::fs::linkat(&tparent, os(tname), &parent, os(&name), AtFlags::empty())
                    .map_err(self.io(&raw, "link"))?;
                // A hard link shares its target's inode and metadata.
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let meta = self.meta(entry, &raw)?;
                let (ft, dev) = match kind {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                self.clear(&parent, &name, &raw)?;
                rustix::fs::mknodat(&parent, os(&name), ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(self.io(&raw, "mknod"))?;
                self.chown_by_name(&parent, &name, &meta, &raw)?;
                // Never open a device node (it is a real device on this
                // host): chmod and xattrs go by name. The node was just
                // created in a directory only this process writes to.
                rustix::fs::chmodat(
                    &parent,
                    os(&name),
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(self.io(&raw, "chmod"))?;
                self.set_xattrs_nofollow(&parent, &name, &meta, &raw)?;
                rustix::fs::utimensat(&parent, os(&name), &times(&meta), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.io(&raw, "set times"))?;
            }
            _ => return Err(self.refused(&raw, "unsupported tar entry type").into()),
        }
        self.mark_written(&comps);
        Ok(())
    }

    /// Handles `.wh.<target>` and `.wh..wh..opq` in directory `parent`.
    fn whiteout(
        &mut self,
        parent: &[Vec<u8>],
        target: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if target == b".wh..opq" {
            let dir = self.walk(parent, true, raw)?;
            let prefix = parent.to_vec();
            self.mark_written(&prefix);
            return self.clear_lower(&dir, &prefix, raw);
        }
        if target.starts_with(b".wh.") {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk and friends)
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(self.refused(raw, "whiteout of an invalid name"));
        }
        let dir = match self.walk(parent, false, raw) {
            Ok(dir) => dir,
            Err(UnpackError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(()); // nothing below to hide
            }
            Err(e) => return Err(e),
        };
        let mut path = parent.to_vec();
        path.push(target.to_vec());
        let joined = join(&path);
        match self.stat(&dir, target, raw)? {
            None => Ok(()),
            // Whiteouts hide lower layers only: what this layer wrote stays.
            Some(t) if self.keep.contains(&joined) && t.is_dir() => {
                let sub = self.open_dir(&dir, target, raw)?;
                self.clear_lower(&sub, &path, raw)
            }
            Some(_) if self.written.contains(&joined) => Ok(()),
            Some(_) => self.remove_any(&dir, target, raw),
        }
    }

    /// Removes everything under `dir` (at `prefix`) that this layer did not
    /// write: what an opaque directory hides.
    fn clear_lower(
        &self,
        dir: &OwnedFd,
        prefix: &[Vec<u8>],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        for name in self.children(dir, raw)? {
            let mut path = prefix.to_vec();
            path.push(name.clone());
            let joined = join(&path);
            if !self.keep.contains(&joined) {
                self.remove_any(dir, &name, raw)?;
            } else if matches!(self.stat(dir, &name, raw)?, Some(t) if t.is_dir()) {
                let sub = self.open_dir(dir, &name, raw)?;
                self.clear_lower(&sub, &path, raw)?;
            }
        }
        Ok(())
    }

    /// Opens the directory at `comps` below the root without following any
    /// symlink, creating missing directories when `create` is set.
    fn walk(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        raw: &[u8],
    ) -> Result<OwnedFd, UnpackError> {
        let mut dir = rustix::io::dup(self.root).map_err(self.io(raw, "dup root"))?;
        for (i, c) in comps.iter().enumerate() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&dir, os(c), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    // A parent the layer did not list: created as Docker
                    // does, root-owned and 0755.
                    rustix::fs::mkdirat(&dir, os(c), Mode::from_raw_mode(0o755))
                        .map_err(self.io(raw, "mkdir parent"))?;
                    let fd = rustix::fs::openat(&dir, os(c), flags, Mode::empty())
                        .map_err(self.io(raw, "open parent"))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(self.io(raw, "chmod parent"))?;
                    self.mark_written(&comps[..=i]);
                    fd
                }
                Err(Errno::LOOP) => {
                    return Err(self.refused(raw, "a parent directory is a symlink"))
                }
                Err(Errno::NOTDIR) => {
                    let reason = match self.stat(&dir, c, raw)? {
                        Some(t) if t.is_symlink() => "a parent directory is a symlink",
                        _ => "a parent is not a directory",
                    };
                    return Err(self.refused(raw, reason));
                }
                Err(e) => return Err(self.io(raw, "open parent")(e)),
            };
            dir = next;
        }
        Ok(dir)
    }

    fn open_dir(&self, parent: &OwnedFd, name: &[u8], raw: &[u8]) -> Result<OwnedFd, UnpackError> {
        rustix::fs::openat(
            parent,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => {
                self.refused(raw, "expected a directory, found something else")
            }
            e => self.io(raw, "open directory")(e),
        })
    }

    fn stat(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        raw: &[u8],
    ) -> Result<Option<FileType>, UnpackError> {
        match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io(raw, "stat")(e)),
        }
    }

    fn children(&self, dir: &OwnedFd, raw: &[u8]) -> Result<Vec<Vec<u8>>, UnpackError> {
        let mut out = Vec::new();
        let entries = rustix::fs::Dir::read_from(dir).map_err(self.io(raw, "read directory"))?;
        for entry in entries {
            let entry = entry.map_err(self.io(raw, "read directory"))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(name.to_vec());
            }
        }
        Ok(out)
    }

    /// Removes whatever is at `name` so a new entry can take its place.
    fn clear(&self, parent: &OwnedFd, name: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        if self.stat(parent, name, raw)?.is_some() {
            self.remove_any(parent, name, raw)?;
        }
        Ok(())
    }

    /// Removes `name` in `parent`, with everything below it when it is a
    /// directory, never following a symlink.
    fn remove_any(&self, parent: &OwnedFd, name: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        match self.stat(parent, name, raw)? {
            None => Ok(()),
            Some(t) if t.is_dir() => {
                let dir = self.open_dir(parent, name, raw)?;
                for child in self.children(&dir, raw)? {
                    self.remove_any(&dir, &child, raw)?;
                }
                rustix::fs::unlinkat(parent, os(name), AtFlags::REMOVEDIR)
                    .map_err(self.io(raw, "remove directory"))
            }
            Some(_) => rustix::fs::unlinkat(parent, os(name), AtFlags::empty())
                .map_err(self.io(raw, "remove")),
        }
    }

    fn set_dir_meta(&self, dir: &OwnedFd, meta: &Meta, raw: &[u8]) -> Result<(), UnpackError> {
        rustix::fs::fchown(dir, Some(uid(meta.uid)), Some(gid(meta.gid)))
            .map_err(self.io(raw, "chown"))?;
        rustix::fs::fchmod(dir, Mode::from_raw_mode(meta.mode)).map_err(self.io(raw, "chmod"))?;
        for (k, v) in &meta.xattrs {
            rustix::fs::fsetxattr(dir, os(k), v, XattrFlags::empty())
                .map_err(self.io(raw, "setxattr"))?;
        }
        Ok(())
    }

    /// Sets the owner of `name` in `parent` without following it (symlinks
    /// and device nodes are never opened).
    fn chown_by_name(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        rustix::fs::chownat(
            parent,
            os(name),
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.io(raw, "chown"))
    }

    /// Sets xattrs on a symlink or special file without opening it:
    /// `lsetxattr` on `/proc/self/fd/<parent>/<name>` resolves the parent
    /// through its descriptor and does not follow `name`.
    fn set_xattrs_nofollow(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
        path.extend_from_slice(name);
        for (k, v) in &meta.xattrs {
            rustix::fs::lsetxattr(os(&path), os(k), v, XattrFlags::empty())
                .map_err(self.io(raw, "setxattr"))?;
        }
        Ok(())
    }

    fn copy_data<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        raw: &[u8],
    ) -> Result<(), EntryError> {
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EntryError::Stream(e)),
            };
            file.write_all(&buf[..n])
                .map_err(|source| UnpackError::Io {
                    layer: self.digest.clone(),
                    path: String::from_utf8_lossy(raw).into_owned(),
                    op: "write",
                    source,
                })?;
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Meta, UnpackError> {
        let bad = |reason| self.refused(raw, reason);
        let h = entry.header();
        let mode = h.mode().map_err(|_| bad("bad mode field"))? & 0o7777;
        let mut uid = h.uid().map_err(|_| bad("bad uid field"))?;
        let mut gid = h.gid().map_err(|_| bad("bad gid field"))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(h.mtime().map_err(|_| bad("bad mtime field"))?)
                .map_err(|_| bad("mtime out of range"))?,
            tv_nsec: 0,
        };
        let mut atime = None;
        let mut xattrs = Vec::new();
        let pax = entry.pax_extensions().map_err(|_| bad("bad PAX header"))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|_| bad("bad PAX record"))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                match key {
                    b"uid" => uid = parse_u64(value).ok_or_else(|| bad("bad PAX uid"))?,
                    b"gid" => gid = parse_u64(value).ok_or_else(|| bad("bad PAX gid"))?,
                    b"mtime" => {
                        mtime = parse_pax_time(value).ok_or_else(|| bad("bad PAX mtime"))?
                    }
                    b"atime" => {
                        atime = Some(parse_pax_time(value).ok_or_else(|| bad("bad PAX atime"))?)
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                xattrs.push((name.to_vec(), value.to_vec()));
                            } else {
                                tracing::debug!(
                                    layer = %self.digest,
                                    xattr = %String::from_utf8_lossy(name),
                                    "dropping xattr"
                                );
                            }
                        }
                    }
                }
            }
        }
        // -1 means "leave unchanged" to chown; it is never a real owner.
        let uid = u32::try_from(uid)
            .ok()
            .filter(|&u| u != u32::MAX)
            .ok_or_else(|| bad("uid out of range"))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|&g| g != u32::MAX)
            .ok_or_else(|| bad("gid out of range"))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        // Deepest last-written first, so setting a child's times does not
        // disturb a parent's (utimensat does not change the parent anyway).
        for (comps, ts) in dir_times.iter().rev() {
            let raw = join(comps);
            let dir = match self.walk(comps, false, &raw) {
                Ok(d) => d,
                // Replaced or removed later in the layer.
                Err(UnpackError::Io { .. }) | Err(UnpackError::Refused { .. }) => continue,
                Err(e) => return Err(e),
            };
            rustix::fs::futimens(&dir, ts).map_err(self.io(&raw, "set times"))?;
        }
        Ok(())
    }
}

fn times(meta: &Meta) -> Timestamps {
    Timestamps {
        last_access: meta.atime,
        last_modification: meta.mtime,
    }
}

fn uid(raw: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(raw)
}

fn gid(raw: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(raw)
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = String::from(frac);
    nanos.truncate(9);
    while nanos.len() < 9 {
        nanos.push('0');
    }
    let tv_nsec = nanos.parse().ok()?;
    // A negative time with a fraction means seconds + fraction below zero;
    // rounding such rare values to the second is fine.
    let tv_nsec = if tv_sec < 0 { 0 } else { tv_nsec };
    Some(Timespec { tv_sec, tv_nsec })
}

/// Which xattrs from a layer are applied. `trusted.overlay.*` is dropped:
/// the image disk is an overlayfs lower layer in the guest, and such
/// attributes would let an image steer overlayfs (opaque, redirect).
fn xattr_allowed(name: &[u8]) -> bool {
    if name.starts_with(b"trusted.overlay.") {
        return false;
    }
    name.starts_with(b"user.")
        || name.starts_with(b"security.")
        || name.starts_with(b"trusted.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_into_plain_names() {
        assert_eq!(
            parse_path(b"./a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(parse_path(b"./").unwrap().is_empty());
        assert_eq!(parse_path(b"../x"), Err("'..' component"));
        assert_eq!(parse_path(b"a/../../x"), Err("'..' component"));
        assert_eq!(parse_path(b"/etc/passwd"), Err("absolute path"));
        assert!(parse_path(&vec![b'a'; MAX_PATH + 1]).is_err());
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn pax_times_parse() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time(b"1.x").is_none());
    }

    #[test]
    fn overlay_xattrs_are_dropped() {
        assert!(xattr_allowed(b"security.capability"));
        assert!(xattr_allowed(b"user.foo"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"system.nfs4_acl"));
    }
}
