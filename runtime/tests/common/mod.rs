//! Helpers shared by the image tests: layer tars written entry by entry
//! (including entries no well-behaved tool would write), and a snapshot of a
//! directory tree to compare file by file.
#![allow(dead_code)]
// Test helpers: a failure should panic the test (clippy.toml allows this in
// #[test] functions only).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cocoon_runtime::image::build::{BuiltImage, BuiltLayer, ImageBuilder};
use cocoon_runtime::image::unpack::Compression;
use cocoon_runtime::image::Images;

pub const MTIME: u64 = 1_600_000_000;

/// A layer tar written entry by entry. Names are written raw into the
/// header, so tests can produce `../x` and `/abs` paths.
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(0);
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names fit the old header");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.dir_owned(name, mode, 0, 0)
    }

    pub fn dir_owned(&mut self, name: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, name, mode, uid, gid);
        self.push(h, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_owned(name, data, mode, 0, 0)
    }

    pub fn file_owned(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, name, mode, uid, gid);
        self.push(h, data)
    }

    /// A file with PAX xattrs (`SCHILY.xattr.<name>`).
    pub fn file_xattrs(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let pax: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.tar
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(name, data, mode)
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, name, 0o777, 0, 0);
        let t = target.as_bytes();
        assert!(t.len() < 100);
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.push(h, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Char, name, mode, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(tar::EntryType::Fifo, name, mode, 0, 0);
        self.push(h, b"")
    }

    /// `.wh.<name>` next to `path`.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn tar(&mut self) -> Vec<u8> {
        let tar = std::mem::replace(&mut self.tar, tar::Builder::new(Vec::new()));
        tar.into_inner().unwrap()
    }

    pub fn build(&mut self, compression: Compression) -> BuiltLayer {
        BuiltLayer::new(self.tar(), compression).unwrap()
    }
}

/// An image of `layers` with a default process.
pub fn image(layers: Vec<BuiltLayer>) -> BuiltImage {
    let mut b = ImageBuilder::new().process(cocoon_runtime::image::DefaultProcess {
        entrypoint: vec!["/bin/tool".into()],
        cmd: vec!["--serve".into()],
        env: vec!["PATH=/bin".into(), "MODE=test".into()],
        working_dir: "/etc/app".into(),
        user: "1000:1000".into(),
    });
    for l in layers {
        b = b.layer(l);
    }
    b.build()
}

/// What a test knows about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Char(u64),
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ino: u64,
}

/// Every entry below `root` by relative path (root itself is "").
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    let meta = fs::symlink_metadata(dir).unwrap();
    let rel = dir
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    out.insert(rel, node(dir, &meta));
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, node(&p, &m));
        }
    }
}

fn node(p: &Path, m: &fs::Metadata) -> Node {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(fs::read_link(p).unwrap().to_string_lossy().into_owned())
    } else if ft.is_char_device() {
        Kind::Char(m.rdev())
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::File(fs::read(p).unwrap())
    };
    Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        ino: m.ino(),
    }
}

/// A fresh store plus a directory next to it that nothing may touch.
pub struct Fixture {
    pub base: tempfile::TempDir,
    pub images: Images,
}

impl Fixture {
    pub fn new() -> Fixture {
        let base = tempfile::tempdir().unwrap();
        let images = Images::open(&base.path().join("state")).unwrap();
        fs::create_dir(base.path().join("outside")).unwrap();
        fs::create_dir(base.path().join("in")).unwrap();
        fs::write(base.path().join("outside/canary"), b"untouched").unwrap();
        Fixture { base, images }
    }

    /// Where a test keeps its inputs and outputs (layouts, archives, trees).
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.base.path().join("in").join(rel)
    }

    /// A path in the state directory.
    pub fn state(&self, rel: &str) -> std::path::PathBuf {
        self.base.path().join("state").join(rel)
    }

    /// The store's tmp/ is empty: no work left behind.
    pub fn assert_tmp_empty(&self) {
        let tmp: Vec<_> = fs::read_dir(self.state("images/tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "work left in tmp/: {tmp:?}");
    }

    /// Nothing outside the store changed: `outside/` holds only the canary,
    /// and the store's `tmp/` is empty.
    pub fn assert_untouched(&self) {
        let outside: Vec<_> = fs::read_dir(self.base.path().join("outside"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("canary")]);
        let canary = self.base.path().join("outside/canary");
        assert_eq!(fs::read(&canary).unwrap(), b"untouched");
        let canary = fs::symlink_metadata(&canary).unwrap();
        assert_eq!(canary.mode() & 0o7777, 0o644);
        assert_eq!(canary.nlink(), 1, "canary was hard-linked into an image");
        self.assert_tmp_empty();
        // Nothing new next to outside/.
        let mut top: Vec<_> = fs::read_dir(self.base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["in", "outside", "state"]);
        let mut state: Vec<_> = fs::read_dir(self.state(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        state.sort();
        assert_eq!(state, ["images"]);
    }
}
