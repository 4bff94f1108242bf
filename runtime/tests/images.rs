//! Multi-layer images built here, imported from OCI layouts, OCI archives
//! and `docker save` archives, unpacked and checked file by file; root disks,
//! names, garbage collection, concurrency and the built-in busybox image.
//! Runs as root (ownership, device nodes, mkfs).

// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cocoon_runtime::image::build::ImageBuilder;
use cocoon_runtime::image::unpack::Compression;
use cocoon_runtime::image::{Digest, DiskFormat, ImageError, Images};
use common::{image, snapshot, Fixture, Kind, Layer, Node, MTIME};

/// Three layers exercising every rule of the OCI layer format.
fn rich_image() -> cocoon_runtime::image::build::BuiltImage {
    let l1 = Layer::new()
        .dir("etc", 0o755)
        .dir_owned("etc/app", 0o750, 1000, 1000)
        .file_owned("etc/app/config", b"v1", 0o640, 1000, 1000)
        .dir("bin", 0o755)
        .file("bin/tool", b"tool-v1", 0o755)
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/sh", "/bin/tool")
        .file("bin/su", b"setuid", 0o4755)
        .file_xattrs(
            "bin/ping",
            b"ping",
            0o755,
            &[("user.cocoon", b"yes"), ("trusted.overlay.opaque", b"y")],
        )
        .dir("data", 0o755)
        .file("data/file-then-dir", b"was a file", 0o644)
        .dir("data/dir-then-file", 0o755)
        .file("data/dir-then-file/child", b"child", 0o644)
        .dir("lib", 0o755)
        .dir("lib/old", 0o755)
        .file("lib/old/a", b"a", 0o644)
        .dir("opq", 0o755)
        .file("opq/lower", b"lower", 0o644)
        .dir("opq/sub", 0o755)
        .file("opq/sub/deep", b"deep", 0o644)
        .dir("usr", 0o755)
        .dir("usr/share", 0o755)
        .file("usr/share/gone", b"gone", 0o644)
        .file("usr/share/stays", b"stays", 0o644)
        .dir("dev", 0o755)
        .chardev("dev/null", 1, 3, 0o666)
        .fifo("dev/fifo", 0o600)
        .build(Compression::Gzip);
    let l2 = Layer::new()
        .file_owned("etc/app/config", b"v2", 0o600, 1000, 1000)
        .whiteout("usr/share/gone")
        .dir("data/file-then-dir", 0o700)
        .file("data/file-then-dir/inner", b"inner", 0o644)
        .file("data/dir-then-file", b"now a file", 0o600)
        .dir("opq", 0o711)
        .opaque("opq")
        .file("opq/new", b"new", 0o644)
        .whiteout("lib/old")
        .file("bin/sh", b"sh replaces the symlink", 0o755)
        .build(Compression::Zstd);
    let l3 = Layer::new()
        .hardlink("bin/tool-link2", "bin/tool")
        .whiteout("never/existed")
        .file("implicit/parent/file", b"implicit", 0o644)
        .symlink("etc/app/link", "../../bin/tool")
        .build(Compression::None);
    image(vec![l1, l2, l3])
}

fn file(data: &[u8], mode: u32, uid: u32) -> (Kind, u32, u32) {
    (Kind::File(data.to_vec()), mode, uid)
}

fn check_rich_tree(tree: &BTreeMap<String, Node>) {
    let get = |p: &str| {
        tree.get(p)
            .unwrap_or_else(|| panic!("{p} missing; tree: {:?}", tree.keys().collect::<Vec<_>>()))
    };
    let expect = |p: &str, (kind, mode, uid): (Kind, u32, u32)| {
        let n = get(p);
        assert_eq!(n.kind, kind, "{p} kind/content");
        assert_eq!(n.mode, mode, "{p} mode {:o}", n.mode);
        assert_eq!(n.uid, uid, "{p} owner");
        assert_eq!(n.gid, uid, "{p} group");
    };
    expect("etc/app", (Kind::Dir, 0o750, 1000));
    expect("etc/app/config", file(b"v2", 0o600, 1000));
    expect("bin/tool", file(b"tool-v1", 0o755, 0));
    expect("bin/tool-link", file(b"tool-v1", 0o755, 0));
    expect("bin/tool-link2", file(b"tool-v1", 0o755, 0));
    assert_eq!(get("bin/tool").ino, get("bin/tool-link").ino, "hard link");
    assert_eq!(
        get("bin/tool").ino,
        get("bin/tool-link2").ino,
        "hard link across layers"
    );
    expect("bin/sh", file(b"sh replaces the symlink", 0o755, 0));
    expect("bin/su", file(b"setuid", 0o4755, 0));
    expect(
        "etc/app/link",
        (Kind::Symlink("../../bin/tool".into()), 0o777, 0),
    );
    expect("data/file-then-dir", (Kind::Dir, 0o700, 0));
    expect("data/file-then-dir/inner", file(b"inner", 0o644, 0));
    expect("data/dir-then-file", file(b"now a file", 0o600, 0));
    expect("opq", (Kind::Dir, 0o711, 0));
    expect("opq/new", file(b"new", 0o644, 0));
    expect("usr/share/stays", file(b"stays", 0o644, 0));
    expect(
        "dev/null",
        (Kind::Char(rustix::fs::makedev(1, 3)), 0o666, 0),
    );
    expect("dev/fifo", (Kind::Fifo, 0o600, 0));
    expect("implicit/parent", (Kind::Dir, 0o755, 0));
    expect("implicit/parent/file", file(b"implicit", 0o644, 0));
    for gone in [
        "usr/share/gone",
        "opq/lower",
        "opq/sub",
        "lib/old",
        "data/dir-then-file/child",
        "never",
    ] {
        assert!(!tree.contains_key(gone), "{gone} should be gone");
    }
    for p in tree.keys() {
        assert!(!p.contains(".wh."), "whiteout file {p} materialised");
    }
    // Times come from the layers (directories included, set after their
    // children were written).
    for p in [
        "bin/tool",
        "etc/app/config",
        "opq",
        "data/file-then-dir",
        "dev/null",
        "etc/app/link",
    ] {
        assert_eq!(get(p).mtime, MTIME as i64, "{p} mtime");
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn unpack(images: &Images, name: &str, dest: &Path) {
    fs::create_dir(dest).unwrap();
    images.unpack(name, dest).unwrap();
}

#[test]
fn oci_layout_multi_layer_image_unpacks_file_by_file() {
    let fx = Fixture::new();
    let img = rich_image();
    img.write_layout(&fx.path("layout"), Some("rich:1"))
        .unwrap();
    let imported = fx
        .images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap();
    assert_eq!(imported.record.manifest, img.manifest);
    assert_eq!(imported.tags, ["rich:1"]);
    assert_eq!(imported.record.layers.len(), 3);
    let p = &imported.record.config.process;
    assert_eq!(p.args(), ["/bin/tool", "--serve"]);
    assert_eq!(p.env, ["PATH=/bin", "MODE=test"]);
    assert_eq!(p.working_dir, "/etc/app");
    assert_eq!(p.user, "1000:1000");

    let dest = fx.path("tree");
    unpack(&fx.images, "rich:1", &dest);
    check_rich_tree(&snapshot(&dest));
    assert_eq!(
        xattr(&dest.join("bin/ping"), "user.cocoon").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        xattr(&dest.join("bin/ping"), "trusted.overlay.opaque"),
        None,
        "overlay xattr must be dropped"
    );
}

#[test]
fn oci_and_docker_archives_give_the_same_tree() {
    let fx = Fixture::new();
    let img = rich_image();
    img.write_layout(&fx.path("layout"), Some("rich:1"))
        .unwrap();
    fx.images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap();
    let reference = fx.path("ref");
    unpack(&fx.images, "rich:1", &reference);
    let want = snapshot(&reference);
    // A directory that a later layer changed (without an entry of its own)
    // carries the time it was unpacked, which differs between two unpacks
    // that straddle a second; such times are not compared.
    let unpack_era = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    let strip = move |t: BTreeMap<String, Node>| -> BTreeMap<String, Node> {
        t.into_iter()
            .map(|(k, n)| {
                let mtime = if matches!(n.kind, Kind::Dir) && n.mtime >= unpack_era {
                    0
                } else {
                    n.mtime
                };
                (k, Node { ino: 0, mtime, ..n })
            })
            .collect()
    };

    img.write_oci_archive(&fx.path("oci.tar"), Some("rich:oci"))
        .unwrap();
    let oci = fx
        .images
        .import_archive(&fx.path("oci.tar"), None, None)
        .unwrap();
    assert_eq!(oci.record.manifest, img.manifest, "same image, same digest");
    assert_eq!(oci.tags, ["rich:oci"]);

    img.write_docker_archive(&fx.path("docker.tar"), Some("rich:docker"))
        .unwrap();
    let docker = fx
        .images
        .import_archive(&fx.path("docker.tar"), None, None)
        .unwrap();
    assert_eq!(docker.tags, ["rich:docker"]);
    assert_eq!(docker.record.config_digest, img.config);
    assert_eq!(
        docker.record.config.process.args(),
        ["/bin/tool", "--serve"]
    );
    let dtree = fx.path("docker-tree");
    unpack(&fx.images, "rich:docker", &dtree);
    let got = snapshot(&dtree);
    check_rich_tree(&got);
    // The root directory's time is the only thing allowed to differ.
    let (mut a, mut b) = (strip(want), strip(got));
    a.remove("");
    b.remove("");
    assert_eq!(a, b);

    // A gzip-compressed docker archive works too.
    let gz = fx.path("docker.tar.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::copy(
        &mut fs::File::open(fx.path("docker.tar")).unwrap(),
        &mut enc,
    )
    .unwrap();
    enc.finish().unwrap();
    let again = fx
        .images
        .import_archive(&gz, Some("rich:docker"), Some("rich:gz"))
        .unwrap();
    assert_eq!(again.record.manifest, docker.record.manifest);
}

fn mount_ro(disk: &Path, at: &Path, fstype: &str) -> bool {
    fs::create_dir_all(at).unwrap();
    Command::new("mount")
        .args(["-o", "loop,ro", "-t", fstype])
        .arg(disk)
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn umount(at: &Path) {
    let _ = Command::new("umount").arg(at).status();
}

/// The tree a disk holds, read by the kernel when loop mounts work here,
/// else by the file system's own tools.
fn disk_tree(disk: &Path, format: DiskFormat, scratch: &Path) -> BTreeMap<String, Node> {
    let mnt = scratch.join(format!("mnt-{format}"));
    if mount_ro(disk, &mnt, format.ext()) {
        let t = snapshot(&mnt);
        umount(&mnt);
        return t;
    }
    let out = scratch.join(format!("extract-{format}"));
    match format {
        DiskFormat::Erofs => {
            let ok = Command::new("fsck.erofs")
                .arg(format!("--extract={}", out.display()))
                .arg("--preserve")
                .arg(disk)
                .status()
                .unwrap()
                .success();
            assert!(ok, "fsck.erofs failed on {}", disk.display());
        }
        DiskFormat::Ext4 => {
            let ok = Command::new("fsck.ext4")
                .args(["-n", "-f"])
                .arg(disk)
                .status()
                .unwrap()
                .success();
            assert!(ok, "fsck.ext4 failed on {}", disk.display());
            fs::create_dir_all(&out).unwrap();
            let ok = Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", out.display()))
                .arg(disk)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    }
    snapshot(&out)
}

#[test]
fn root_disks_hold_the_tree_and_are_cached_by_digest() {
    let fx = Fixture::new();
    let img = rich_image();
    img.write_layout(&fx.path("layout"), None).unwrap();
    fx.images
        .import_layout(&fx.path("layout"), None, Some("rich"))
        .unwrap();
    for format in DiskFormat::ALL {
        let first = fx.images.root_disk("rich", format).unwrap();
        assert!(first.built);
        assert_eq!(first.image, img.manifest);
        assert!(first.path.starts_with(fx.state("images/disks")));
        let meta = fs::metadata(&first.path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o444, "disk is read-only");
        let mtime = meta.mtime_nsec();
        let again = fx
            .images
            .root_disk(&img.manifest.to_string(), format)
            .unwrap();
        assert!(!again.built, "second call must use the cache");
        assert_eq!(again.path, first.path);
        assert_eq!(fs::metadata(&again.path).unwrap().mtime_nsec(), mtime);
        let tree = disk_tree(&first.path, format, &fx.path(""));
        check_rich_tree(&tree);
    }
    fx.assert_tmp_empty();
}

#[test]
fn concurrent_imports_and_disk_builds_of_one_image_share_the_work() {
    let fx = Fixture::new();
    let img = rich_image();
    img.write_layout(&fx.path("layout"), None).unwrap();
    let archive = fx.path("image.tar");
    img.write_oci_archive(&archive, None).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let images = fx.images.clone();
                let layout = fx.path("layout");
                let archive = archive.clone();
                s.spawn(move || {
                    let imported = if i % 2 == 0 {
                        images.import_layout(&layout, None, Some("same")).unwrap()
                    } else {
                        images.import_archive(&archive, None, Some("same")).unwrap()
                    };
                    images
                        .root_disk(&imported.record.manifest.to_string(), DiskFormat::Erofs)
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|d| d.built).count(), 1, "{results:?}");
    assert!(results.iter().all(|d| d.path == results[0].path));
    assert_eq!(fx.images.list().unwrap().len(), 1);
    fx.assert_tmp_empty();
}

#[test]
fn work_left_by_a_crash_is_removed_and_never_used() {
    let fx = Fixture::new();
    let img = rich_image();
    img.write_layout(&fx.path("layout"), None).unwrap();
    let imported = fx
        .images
        .import_layout(&fx.path("layout"), None, Some("x"))
        .unwrap();
    // What a killed import and a killed disk build leave: unlocked files
    // in tmp/, never under a final name.
    let tmp = fx.state("images/tmp");
    fs::write(tmp.join("blob-1-2-3"), b"half a layer").unwrap();
    fs::write(tmp.join("disk-1-2-4"), b"half a disk").unwrap();
    fs::create_dir_all(tmp.join("rootfs-1-2-5/etc")).unwrap();
    let images = Images::open(&fx.state("")).unwrap();
    fx.assert_tmp_empty();
    let disk = images.root_disk("x", DiskFormat::Erofs).unwrap();
    assert!(disk.built);
    assert_eq!(disk.image, imported.record.manifest);
}

#[test]
fn names_listing_removal_and_gc() {
    let fx = Fixture::new();
    let a = image(vec![Layer::new()
        .file("a", b"a", 0o644)
        .build(Compression::Gzip)]);
    let b = image(vec![Layer::new()
        .file("b", b"b", 0o644)
        .build(Compression::Gzip)]);
    a.write_layout(&fx.path("a"), None).unwrap();
    b.write_layout(&fx.path("b"), None).unwrap();
    let ia = fx
        .images
        .import_layout(&fx.path("a"), None, Some("img-a"))
        .unwrap();
    let ib = fx
        .images
        .import_layout(
            &fx.path("b"),
            None,
            Some("registry.local:5000/team/img-b:v1"),
        )
        .unwrap();
    assert_eq!(ia.tags, ["img-a:latest"]);
    fx.images.tag("img-a", "alias").unwrap();
    let list = fx.images.list().unwrap();
    assert_eq!(list.len(), 2);
    let la = list.iter().find(|s| s.digest == a.manifest).unwrap();
    assert_eq!(la.tags, ["alias:latest", "img-a:latest"]);
    assert_eq!(la.size, a.layers[0].blob.len() as u64);
    // Resolution by name, full digest and digest prefix.
    assert_eq!(fx.images.catalog().resolve("alias").unwrap(), a.manifest);
    assert_eq!(
        fx.images
            .catalog()
            .resolve(&a.manifest.hex()[..12])
            .unwrap(),
        a.manifest
    );
    assert!(matches!(
        fx.images.root_disk("nope", DiskFormat::Erofs),
        Err(ImageError::Catalog(_))
    ));

    fx.images.root_disk("img-a", DiskFormat::Erofs).unwrap();
    fx.images.root_disk("img-a", DiskFormat::Ext4).unwrap();
    let disk_b = fx
        .images
        .root_disk(&ib.record.manifest.to_string(), DiskFormat::Erofs)
        .unwrap();

    // Nothing unnamed, nothing to collect.
    let report = fx.images.gc(&HashSet::new()).unwrap();
    assert!(
        report.images.is_empty() && report.blobs == 0 && report.disks == 0,
        "{report:?}"
    );

    // In use: refused while it is the last name.
    let in_use: HashSet<_> = [a.manifest.clone()].into();
    fx.images.remove("alias", &in_use).unwrap();
    assert!(matches!(
        fx.images.remove("img-a", &in_use),
        Err(ImageError::InUse(_))
    ));
    // Unnamed but in use: kept by gc.
    fx.images
        .remove(&b.manifest.to_string(), &HashSet::new())
        .unwrap();
    let ib_record = fx.images.store().record_path(&b.manifest);
    assert!(!ib_record.exists());
    let report = fx.images.gc(&in_use).unwrap();
    assert!(
        report.images.is_empty(),
        "record of b was removed already: {report:?}"
    );
    assert_eq!(report.disks, 1);
    assert_eq!(report.blobs, 3, "manifest, config and layer of b");
    assert!(!disk_b.path.exists());
    assert!(fx.images.root_disk("img-a", DiskFormat::Erofs).is_ok());

    fx.images.remove("img-a", &HashSet::new()).unwrap();
    let report = fx.images.gc(&HashSet::new()).unwrap();
    assert_eq!(report.disks, 2);
    assert_eq!(report.blobs, 3);
    assert!(fx.images.list().unwrap().is_empty());
    assert!(fx.images.store().list_blobs().unwrap().is_empty());
}

#[test]
fn gc_keeps_unnamed_images_in_use() {
    let fx = Fixture::new();
    let a = image(vec![Layer::new()
        .file("a", b"a", 0o644)
        .build(Compression::None)]);
    // An OCI layout without ref names: the image is imported unnamed.
    a.write_layout(&fx.path("a"), None).unwrap();
    let ia = fx.images.import_layout(&fx.path("a"), None, None).unwrap();
    assert!(ia.tags.is_empty());
    let in_use: HashSet<_> = [a.manifest.clone()].into();
    let report = fx.images.gc(&in_use).unwrap();
    assert!(report.images.is_empty() && report.blobs == 0);
    let report = fx.images.gc(&HashSet::new()).unwrap();
    assert_eq!(report.images, vec![a.manifest.clone()]);
    assert_eq!(report.blobs, 3);
}

#[test]
fn indexes_resolve_to_linux_amd64() {
    use serde_json::json;
    let fx = Fixture::new();
    let amd = image(vec![Layer::new()
        .file("arch", b"amd64", 0o644)
        .build(Compression::Gzip)]);
    let arm = ImageBuilder::new()
        .platform("linux", "arm64")
        .layer(
            Layer::new()
                .file("arch", b"arm64", 0o644)
                .build(Compression::Gzip),
        )
        .build();
    let dir = fx.path("multi");
    amd.write_layout(&dir, None).unwrap();
    arm.write_layout(&dir, None).unwrap();
    let desc = |img: &cocoon_runtime::image::build::BuiltImage, arch: &str| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest.to_string(),
            "size": img.blobs[&img.manifest].len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    // A nested index (what `docker buildx` and registries produce), with
    // arm64 listed first.
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc(&arm, "arm64"), desc(&amd, "amd64")],
    })
    .to_string();
    let nested_digest = cocoon_runtime::image::Digest::sha256_of(nested.as_bytes());
    fs::write(dir.join("blobs/sha256").join(nested_digest.hex()), &nested).unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest.to_string(),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    });
    fs::write(dir.join("index.json"), top.to_string()).unwrap();
    let imported = fx.images.import_layout(&dir, None, None).unwrap();
    assert_eq!(imported.record.manifest, amd.manifest);
    assert_eq!(imported.tags, ["multi:1"]);

    // Only arm64 on offer: a clear refusal.
    let only_arm = json!({"schemaVersion": 2, "manifests": [desc(&arm, "arm64")]});
    fs::write(dir.join("index.json"), only_arm.to_string()).unwrap();
    let err = fx
        .images
        .import_layout(&dir, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no linux/amd64 image") && err.contains("linux/arm64"),
        "{err}"
    );

    // An arm64 manifest that does not say so in the index: caught by its config.
    let unlabelled = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": arm.manifest.to_string(), "size": arm.blobs[&arm.manifest].len()}]});
    fs::write(dir.join("index.json"), unlabelled.to_string()).unwrap();
    let err = fx
        .images
        .import_layout(&dir, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("linux/arm64, not linux/amd64"), "{err}");

    // Two named images: a name must be given, and picks one.
    let two = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest.to_string(),
         "size": amd.blobs[&amd.manifest].len(), "annotations": {"org.opencontainers.image.ref.name": "one"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest.to_string(),
         "size": amd.blobs[&amd.manifest].len(), "annotations": {"org.opencontainers.image.ref.name": "two"}},
    ]});
    fs::write(dir.join("index.json"), two.to_string()).unwrap();
    let err = fx
        .images
        .import_layout(&dir, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("several images") && err.contains("one") && err.contains("two"),
        "{err}"
    );
    let picked = fx.images.import_layout(&dir, Some("two"), None).unwrap();
    assert_eq!(picked.tags, ["two:latest"]);
    let err = fx
        .images
        .import_layout(&dir, Some("three"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no image named \"three\""), "{err}");
}

#[test]
fn busybox_image_is_built_from_the_host_binary() {
    let fx = Fixture::new();
    let busybox = Path::new(cocoon_runtime::image::busybox::DEFAULT_BUSYBOX);
    let first = fx.images.import_busybox(busybox).unwrap();
    assert_eq!(first.tags, ["busybox:latest"]);
    assert_eq!(first.record.config.process.args(), ["sh"]);
    // Deterministic: importing again gives the same image.
    let again = fx.images.import_busybox(busybox).unwrap();
    assert_eq!(again.record.manifest, first.record.manifest);

    let dest = fx.path("bb");
    unpack(&fx.images, "busybox", &dest);
    let tree = snapshot(&dest);
    assert_eq!(
        tree["bin/busybox"].kind,
        Kind::File(fs::read(busybox).unwrap())
    );
    assert_eq!(tree["bin/busybox"].mode, 0o755);
    assert_eq!(tree["bin/sh"].kind, Kind::Symlink("/bin/busybox".into()));
    assert_eq!(tree["tmp"].mode, 0o1777);
    assert!(tree.contains_key("usr/bin/env"));
    let out = Command::new(dest.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    let disk = fx.images.root_disk("busybox", DiskFormat::DEFAULT).unwrap();
    assert!(disk.built);
}

#[test]
fn docker_archive_with_symlinked_duplicate_layer() {
    // Old `docker save` wrote a layer used twice once, and a symlink to it.
    let fx = Fixture::new();
    let layer = Layer::new()
        .file("same", b"same", 0o644)
        .build(Compression::None);
    let img = ImageBuilder::new()
        .layer(layer.clone())
        .layer(layer.clone())
        .build();
    let config = &img.blobs[&img.config];
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |kind: tar::EntryType, name: &str, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        match link {
            Some(l) => tar.append_link(&mut h, name, l).unwrap(),
            None => tar.append_data(&mut h, name, data).unwrap(),
        }
    };
    add(
        tar::EntryType::Regular,
        &format!("{}.json", img.config.hex()),
        config,
        None,
    );
    add(tar::EntryType::Directory, "a", b"", None);
    add(tar::EntryType::Regular, "a/layer.tar", &layer.tar, None);
    add(tar::EntryType::Directory, "b", b"", None);
    add(
        tar::EntryType::Symlink,
        "b/layer.tar",
        b"",
        Some("../a/layer.tar"),
    );
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", img.config.hex()),
        "RepoTags": ["dup:1"],
        "Layers": ["a/layer.tar", "b/layer.tar"],
    }]);
    add(
        tar::EntryType::Regular,
        "manifest.json",
        manifest.to_string().as_bytes(),
        None,
    );
    let path = fx.path("dup.tar");
    fs::write(&path, tar.into_inner().unwrap()).unwrap();
    let imported = fx
        .images
        .import_archive(&path, Some("dup:1"), None)
        .unwrap();
    assert_eq!(imported.tags, ["dup:1"]);
    assert_eq!(imported.record.layers.len(), 2);
    assert_eq!(
        imported.record.layers[0].digest,
        imported.record.layers[1].digest
    );
    let dest = fx.path("tree");
    unpack(&fx.images, "dup:1", &dest);
    assert_eq!(fs::read(dest.join("same")).unwrap(), b"same");

    // A config whose file name is not its digest is refused by name.
    let mut tar = tar::Builder::new(Vec::new());
    let fake = Digest::sha256_of(b"another config");
    let mut h = tar::Header::new_gnu();
    h.set_size(config.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, format!("{}.json", fake.hex()), &config[..])
        .unwrap();
    let m =
        serde_json::json!([{"Config": format!("{}.json", fake.hex()), "Layers": []}]).to_string();
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "manifest.json", m.as_bytes())
        .unwrap();
    let bad = fx.path("bad.tar");
    fs::write(&bad, tar.into_inner().unwrap()).unwrap();
    let err = fx
        .images
        .import_archive(&bad, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&fake.to_string()) && err.contains("digest mismatch"),
        "{err}"
    );
}
