//! The content-addressed store under Cocoon's state directory: verified blobs,
//! temporary files that become visible only once complete, and the locks that
//! make concurrent imports, disk builds and garbage collection safe.
//!
//! Layout (all under `<state>/images/`):
//!
//! ```text
//! blobs/<alg>/<hex>            verified blobs, read-only, never rewritten
//! disks/<alg>/<hex>.<format>   root disks, one per image (see disk.rs)
//! records/<alg>/<hex>.json     what was imported (see catalog.rs)
//! refs.json                    tags (see catalog.rs)
//! tmp/                         work in progress, each entry flock()ed by its owner
//! locks/                       gc.lock, refs.lock, one lock per disk being built
//! ```
//!
//! Every file appears under its final name by `rename(2)` of a complete,
//! fsync'ed temporary file in `tmp/` (same filesystem), followed by an fsync
//! of the directory, so a crash leaves either nothing or the whole file. Two
//! writers of the same blob both write their own temporary file; the second
//! rename replaces identical content. Entries in `tmp/` whose owner died (no
//! lock held) are removed by [`Store::clean_stale_temps`].
//!
//! This module does not know what a manifest, layer or tag is.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::digest::{Algorithm, Digest, DigestError, Hasher, HashingReader};

/// Cocoon's default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cocoon";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    /// Reading the content to store failed (the source, not the store).
    #[error("reading blob {digest}: {source}")]
    Read {
        /// The blob (expected digest, or `unknown`).
        digest: String,
        /// The error from the source.
        source: io::Error,
    },
    /// Content did not match its digest or size.
    #[error("blob {digest} failed verification: {source}")]
    Verify {
        /// The blob's announced digest.
        digest: Digest,
        /// What did not match.
        source: DigestError,
    },
    /// A blob is not in the store.
    #[error("blob {digest} is not in the store")]
    Missing {
        /// The blob.
        digest: Digest,
    },
    /// A blob is larger than the caller accepts (for JSON documents).
    #[error("blob {digest} is {size} bytes, more than the {limit} accepted")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The blob, disk and record store of one state directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let root = state_dir.join("images");
        let store = Store { root };
        for dir in [
            store.root.clone(),
            store.root.join("blobs/sha256"),
            store.root.join("blobs/sha512"),
            store.root.join("disks/sha256"),
            store.root.join("disks/sha512"),
            store.root.join("records/sha256"),
            store.root.join("records/sha512"),
            store.root.join("tmp"),
            store.root.join("locks"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        // Images may hold secrets; only root reads the store.
        fs::set_permissions(&store.root, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &store.root))?;
        Ok(store)
    }

    /// `<state>/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Where the record of the image with manifest `digest` lives.
    pub fn record_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("records")
            .join(digest.algorithm().name())
            .join(format!("{}.json", digest.hex()))
    }

    /// Where the root disk of image `digest` in a format with file extension
    /// `ext` lives.
    pub fn disk_path(&self, digest: &Digest, ext: &str) -> PathBuf {
        self.root
            .join("disks")
            .join(digest.algorithm().name())
            .join(format!("{}.{ext}", digest.hex()))
    }

    /// The tag file.
    pub fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    /// The size of blob `digest`, or `None` when it is not stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    /// Opens blob `digest` for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    StoreError::Missing {
                        digest: digest.clone(),
                    }
                } else {
                    io_err("open", &path)(e)
                }
            })
    }

    /// Reads a whole blob of at most `limit` bytes (JSON documents).
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let file = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = file.metadata().map_err(io_err("stat", &path))?.len();
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        file.take(limit)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &path))?;
        Ok(buf)
    }

    /// Copies `reader` into the store as blob `expected`, verifying digest
    /// and (when given) size before the blob becomes visible. Returns its
    /// size. A blob already stored is not read again.
    pub fn ingest<R: Read>(
        &self,
        mut reader: R,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<u64, StoreError> {
        if let Some(have) = self.stored_size_matches(expected, size)? {
            return Ok(have);
        }
        let mut writer = self.blob_writer(expected, size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Read {
                        digest: expected.to_string(),
                        source,
                    })
                }
            };
            writer.write(&buf[..n])?;
        }
        writer.commit()
    }

    /// The size of blob `expected` when it is already stored, checked
    /// against `size` (stored blobs were verified on the way in).
    pub fn stored_size_matches(
        &self,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(have) = self.blob_size(expected)? else {
            return Ok(None);
        };
        match size {
            Some(want) if want != have => Err(StoreError::Verify {
                digest: expected.clone(),
                source: DigestError::SizeMismatch {
                    digest: expected.clone(),
                    expected: want,
                    actual: have,
                },
            }),
            _ => Ok(Some(have)),
        }
    }

    /// Starts writing blob `expected` from chunks that arrive one by one (a
    /// download). Nothing is visible under the blob's name until
    /// [`BlobWriter::commit`] has verified digest and size; dropping the
    /// writer, or a crash, leaves only a temporary file that is removed.
    pub fn blob_writer(
        &self,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<BlobWriter, StoreError> {
        Ok(BlobWriter {
            tmp: self.temp_file("blob")?,
            hasher: Hasher::new(expected.algorithm()),
            expected: expected.clone(),
            size,
            written: 0,
            dest: self.blob_path(expected),
        })
    }

    /// Copies `reader` into the store under the SHA-256 digest of its
    /// content, whatever that is. For sources that name content by path
    /// (legacy `docker save` archives).
    pub fn ingest_unnamed<R: Read>(&self, reader: R) -> Result<(Digest, u64), StoreError> {
        let mut tmp = self.temp_file("blob")?;
        let mut hashing = HashingReader::new(reader, Algorithm::Sha256);
        copy_into(&mut hashing, &mut tmp, "unknown")?;
        let (digest, n) = hashing.finish();
        if self.blob_size(&digest)?.is_none() {
            tmp.set_mode(0o444)?;
            tmp.persist(&self.blob_path(&digest))?;
        }
        Ok((digest, n))
    }

    /// Stores `bytes` as a blob and returns its SHA-256 digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(bytes);
        self.ingest(bytes, &digest, Some(bytes.len() as u64))?;
        Ok(digest)
    }

    /// Every blob in the store.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.name());
            for name in list_dir(&dir)? {
                // Anything that is not a digest is not ours; leave it alone.
                if let Some(d) = name
                    .to_str()
                    .and_then(|n| format!("{}:{n}", alg.name()).parse().ok())
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Removes a blob; a blob that is already gone is not an error.
    pub fn remove_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        remove_file_if_exists(&self.blob_path(digest))
    }

    /// A new temporary file in `tmp/`, locked by this process until it is
    /// persisted or dropped (and then removed).
    pub fn temp_file(&self, kind: &str) -> Result<TempFile, StoreError> {
        loop {
            let path = self.root.join("tmp").join(unique_name(kind));
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_o_nofollow())
                .open(&path)
            {
                Ok(file) => {
                    lock(&file, FlockOperation::NonBlockingLockExclusive)
                        .map_err(io_err("lock", &path))?;
                    return Ok(TempFile {
                        file,
                        path,
                        done: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
    }

    /// A new temporary directory in `tmp/`, locked by this process and
    /// removed with everything in it when dropped.
    pub fn temp_dir(&self, kind: &str) -> Result<TempDir, StoreError> {
        loop {
            let path = self.root.join("tmp").join(unique_name(kind));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let fd = rustix::fs::open(
                        &path,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err("open", &path)(e.into()))?;
                    lock(&fd, FlockOperation::NonBlockingLockExclusive)
                        .map_err(io_err("lock", &path))?;
                    return Ok(TempDir { path, _lock: fd });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create directory", &path)(e)),
            }
        }
    }

    /// Takes lock `name` (a file under `locks/`), waiting for it; shared or
    /// exclusive. Released when the returned value is dropped.
    pub fn lock(&self, name: &str, exclusive: bool) -> Result<Lock, StoreError> {
        let path = self.root.join("locks").join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(io_err("open", &path))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        lock(&file, op).map_err(io_err("lock", &path))?;
        Ok(Lock { _file: file })
    }

    /// Removes entries of `tmp/` left by processes that died. Returns how
    /// many were removed.
    pub fn clean_stale_temps(&self) -> Result<usize, StoreError> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for name in list_dir(&dir)? {
            let path = dir.join(&name);
            let fd = match rustix::fs::open(
                &path,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Gone meanwhile (persisted or cleaned by its owner).
                Err(rustix::io::Errno::NOENT) => continue,
                // A symlink or something else we never create: remove it.
                Err(rustix::io::Errno::LOOP) => {
                    remove_file_if_exists(&path)?;
                    removed += 1;
                    continue;
                }
                Err(e) => return Err(io_err("open", &path)(e.into())),
            };
            if lock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue; // a live process owns it
            }
            let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
            if meta.is_dir() {
                match fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &path)(e)),
                }
            } else {
                remove_file_if_exists(&path)?;
            }
            tracing::info!(path = %path.display(), "removed work left by a dead process");
            removed += 1;
        }
        Ok(removed)
    }

    /// Writes `bytes` to `path` (inside the store) atomically.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tmp = self.temp_file("meta")?;
        tmp.write_all(bytes).map_err(io_err("write", &tmp.path))?;
        tmp.persist(path)
    }
}

/// A file being written in `tmp/`. It becomes visible only through
/// [`TempFile::persist`]; dropped unpersisted, it is removed.
pub struct TempFile {
    file: File,
    path: PathBuf,
    done: bool,
}

impl TempFile {
    /// The temporary path (for tools that write the file themselves).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets the permission bits.
    pub fn set_mode(&self, mode: u32) -> Result<(), StoreError> {
        self.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &self.path))
    }

    /// Flushes the file to disk, renames it to `dest` and flushes the
    /// directory, so that after a crash `dest` is absent or complete.
    pub fn persist(mut self, dest: &Path) -> Result<(), StoreError> {
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        fs::rename(&self.path, dest).map_err(io_err("rename into", dest))?;
        self.done = true;
        sync_parent(dest)
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A blob being written from chunks, hashed and size-checked as they
/// arrive; see [`Store::blob_writer`].
pub struct BlobWriter {
    tmp: TempFile,
    hasher: Hasher,
    expected: Digest,
    size: Option<u64>,
    written: u64,
    dest: PathBuf,
}

impl BlobWriter {
    /// Appends `bytes`. More bytes than the announced size fail at once, so
    /// a source cannot fill the disk by streaming forever.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let written = self.written.saturating_add(bytes.len() as u64);
        if let Some(size) = self.size {
            if written > size {
                return Err(StoreError::Verify {
                    digest: self.expected.clone(),
                    source: DigestError::SizeMismatch {
                        digest: self.expected.clone(),
                        expected: size,
                        actual: written,
                    },
                });
            }
        }
        self.tmp
            .file
            .write_all(bytes)
            .map_err(io_err("write", &self.tmp.path))?;
        self.hasher.update(bytes);
        self.written = written;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest and makes the blob visible under its name.
    /// Returns its size. On a mismatch the blob is not stored.
    pub fn commit(self) -> Result<u64, StoreError> {
        let verify = |source| StoreError::Verify {
            digest: self.expected.clone(),
            source,
        };
        if let Some(size) = self.size {
            if self.written != size {
                return Err(verify(DigestError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: size,
                    actual: self.written,
                }));
            }
        }
        let actual = self.hasher.clone().finish();
        if actual != self.expected {
            return Err(verify(DigestError::Mismatch {
                expected: self.expected.clone(),
                actual,
            }));
        }
        self.tmp.set_mode(0o444)?;
        self.tmp.persist(&self.dest)?;
        Ok(self.written)
    }
}

/// A directory being filled in `tmp/`, removed with its content on drop.
pub struct TempDir {
    path: PathBuf,
    _lock: OwnedFd,
}

impl TempDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks, so a hostile tree cannot
        // make this delete anything outside it.
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temporary directory");
        }
    }
}

/// A held `flock(2)` lock.
pub struct Lock {
    _file: File,
}

fn lock(fd: impl AsFd, op: FlockOperation) -> io::Result<()> {
    loop {
        match rustix::fs::flock(&fd, op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn copy_into<R: Read>(reader: &mut R, tmp: &mut TempFile, what: &str) -> Result<(), StoreError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StoreError::Read {
                    digest: what.to_owned(),
                    source,
                })
            }
        };
        tmp.file
            .write_all(&buf[..n])
            .map_err(io_err("write", &tmp.path))?;
    }
}

/// Names of the entries of `dir` (empty when it does not exist).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<std::ffi::OsString>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        out.push(entry.map_err(io_err("list", dir))?.file_name());
    }
    Ok(out)
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

pub(crate) fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = File::open(parent).map_err(io_err("open", parent))?;
    dir.sync_all().map_err(io_err("fsync", parent))
}

fn unique_name(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{kind}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn libc_o_nofollow() -> i32 {
    OFlags::NOFOLLOW.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn ingest_verifies_before_the_blob_appears() {
        let (_d, s) = store();
        let good = Digest::sha256_of(b"content");
        let err = s.ingest(&b"tampered"[..], &good, None).unwrap_err();
        assert!(err.to_string().contains(&good.to_string()), "{err}");
        assert_eq!(s.blob_size(&good).unwrap(), None);
        assert!(list_dir(&s.root().join("tmp")).unwrap().is_empty());
        assert_eq!(s.ingest(&b"content"[..], &good, Some(7)).unwrap(), 7);
        assert_eq!(s.read_blob(&good, 100).unwrap(), b"content");
    }

    #[test]
    fn blob_writer_commits_only_verified_chunks() {
        let (_d, s) = store();
        let good = Digest::sha256_of(b"hello world");
        let mut w = s.blob_writer(&good, Some(11)).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert_eq!(w.written(), 11);
        assert_eq!(s.blob_size(&good).unwrap(), None, "visible before commit");
        assert_eq!(w.commit().unwrap(), 11);
        assert_eq!(s.read_blob(&good, 100).unwrap(), b"hello world");

        let other = Digest::sha256_of(b"other");
        let mut w = s.blob_writer(&other, Some(5)).unwrap();
        assert!(matches!(
            w.write(b"toolong"),
            Err(StoreError::Verify {
                source: DigestError::SizeMismatch { .. },
                ..
            })
        ));
        drop(w);
        let mut w = s.blob_writer(&other, None).unwrap();
        w.write(b"0ther").unwrap();
        let err = w.commit().unwrap_err();
        assert!(err.to_string().contains(&other.to_string()), "{err}");
        assert_eq!(s.blob_size(&other).unwrap(), None);
        assert!(list_dir(&s.root().join("tmp")).unwrap().is_empty());
    }

    #[test]
    fn ingest_twice_is_harmless() {
        let (_d, s) = store();
        let d = s.put_bytes(b"x").unwrap();
        assert_eq!(s.put_bytes(b"x").unwrap(), d);
        assert_eq!(s.list_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn stale_temps_are_cleaned_live_ones_kept() {
        let (_d, s) = store();
        let live = s.temp_file("blob").unwrap();
        // A file nobody holds a lock on: what a crashed import leaves.
        fs::write(s.root().join("tmp/blob-dead"), b"partial").unwrap();
        fs::create_dir(s.root().join("tmp/unpack-dead")).unwrap();
        fs::write(s.root().join("tmp/unpack-dead/f"), b"x").unwrap();
        assert_eq!(s.clean_stale_temps().unwrap(), 2);
        assert!(live.path().exists());
        let names = list_dir(&s.root().join("tmp")).unwrap();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn read_blob_refuses_oversized_documents() {
        let (_d, s) = store();
        let d = s.put_bytes(&[b'a'; 100]).unwrap();
        assert!(matches!(
            s.read_blob(&d, 10),
            Err(StoreError::TooLarge { size: 100, .. })
        ));
    }
}
