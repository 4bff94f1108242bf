//! Hostile images: each must be refused with an error that says what is
//! wrong, and nothing may be written outside the store (a canary directory
//! next to it stays as it was, and the store's tmp/ is cleaned up).

// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;

use cocoon_runtime::image::build::{BuiltImage, BuiltLayer, ImageBuilder};
use cocoon_runtime::image::unpack::Compression;
use cocoon_runtime::image::{Digest, DiskFormat, ImageError};
use common::{Fixture, Layer};

/// Imports `img` and builds its disk; returns the error text.
fn refused(fx: &Fixture, img: &BuiltImage) -> String {
    img.write_layout(&fx.path("layout"), None).unwrap();
    let result = fx
        .images
        .import_layout(&fx.path("layout"), None, Some("hostile"))
        .and_then(|_| fx.images.root_disk("hostile", DiskFormat::Erofs));
    let err = match result {
        Ok(disk) => panic!("hostile image accepted: {disk:?}"),
        Err(e) => e,
    };
    fx.assert_untouched();
    err.to_string()
}

fn one_layer(layer: BuiltLayer) -> BuiltImage {
    ImageBuilder::new().layer(layer).build()
}

/// From the rootfs (`state/images/tmp/rootfs-*`), this many `..` reach the
/// fixture's base directory.
const UP: &str = "../../../..";

#[test]
fn path_traversal_is_refused() {
    let fx = Fixture::new();
    let layer = Layer::new()
        .file("ok", b"fine", 0o644)
        .file(&format!("{UP}/outside/pwned"), b"x", 0o644)
        .build(Compression::Gzip);
    let err = refused(&fx, &one_layer(layer));
    assert!(
        err.contains("'..' component") && err.contains("outside/pwned"),
        "{err}"
    );

    let fx = Fixture::new();
    let layer = Layer::new()
        .file("a/../../x", b"x", 0o644)
        .build(Compression::None);
    let err = refused(&fx, &one_layer(layer));
    assert!(err.contains("'..' component"), "{err}");
}

#[test]
fn absolute_paths_are_refused() {
    let fx = Fixture::new();
    let target = fx.base.path().join("outside/pwned");
    let layer = Layer::new()
        .file(target.to_str().unwrap(), b"x", 0o644)
        .build(Compression::Gzip);
    let err = refused(&fx, &one_layer(layer));
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn symlink_to_outside_used_as_a_directory_is_refused() {
    for target in [fx_abs_outside(), format!("{UP}/outside"), "/etc".to_owned()] {
        let fx = Fixture::new();
        let target = target.replace("BASE", fx.base.path().to_str().unwrap());
        let layer = Layer::new()
            .symlink("link", &target)
            .file("link/pwned", b"x", 0o644)
            .build(Compression::Gzip);
        let err = refused(&fx, &one_layer(layer));
        assert!(err.contains("symlink"), "{target}: {err}");
    }
}

fn fx_abs_outside() -> String {
    "BASE/outside".to_owned()
}

#[test]
fn symlink_in_a_lower_layer_is_not_followed_by_an_upper_one() {
    // Layer 1 plants `etc -> /etc`; layer 2 writes `etc/passwd`.
    let fx = Fixture::new();
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let img = ImageBuilder::new()
        .layer(Layer::new().symlink("etc", "/etc").build(Compression::Gzip))
        .layer(
            Layer::new()
                .file("etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)
                .build(Compression::Gzip),
        )
        .build();
    let err = refused(&fx, &img);
    assert!(
        err.contains("etc/passwd") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before);
}

#[test]
fn whiteouts_and_hard_links_through_symlinks_are_refused() {
    let fx = Fixture::new();
    let base = fx.base.path().to_str().unwrap().to_owned();
    let img = ImageBuilder::new()
        .layer(
            Layer::new()
                .symlink("link", &format!("{base}/outside"))
                .build(Compression::None),
        )
        .layer(
            Layer::new()
                .whiteout("link/canary")
                .build(Compression::None),
        )
        .build();
    let err = refused(&fx, &img);
    assert!(err.contains("symlink"), "{err}");

    let fx = Fixture::new();
    let base = fx.base.path().to_str().unwrap().to_owned();
    let layer = Layer::new()
        .symlink("link", &format!("{base}/outside"))
        .hardlink("stolen", "link/canary")
        .build(Compression::None);
    let err = refused(&fx, &one_layer(layer));
    assert!(err.contains("symlink"), "{err}");

    let fx = Fixture::new();
    let layer = Layer::new()
        .hardlink("stolen", &format!("{UP}/outside/canary"))
        .build(Compression::None);
    let err = refused(&fx, &one_layer(layer));
    assert!(err.contains("'..' component"), "{err}");
}

#[test]
fn a_file_over_a_symlink_replaces_the_symlink() {
    // Not hostile once handled right: the symlink is replaced, never
    // written through.
    let fx = Fixture::new();
    let base = fx.base.path().to_str().unwrap().to_owned();
    let img = ImageBuilder::new()
        .layer(
            Layer::new()
                .symlink("f", &format!("{base}/outside/canary"))
                .build(Compression::None),
        )
        .layer(
            Layer::new()
                .file("f", b"mine", 0o644)
                .build(Compression::None),
        )
        .build();
    img.write_layout(&fx.path("layout"), None).unwrap();
    fx.images
        .import_layout(&fx.path("layout"), None, Some("ok"))
        .unwrap();
    let dest = fx.path("tree");
    fs::create_dir(&dest).unwrap();
    fx.images.unpack("ok", &dest).unwrap();
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"mine");
    assert!(!fs::symlink_metadata(dest.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    fx.assert_untouched();
}

#[test]
fn a_layer_that_is_not_a_tar_is_refused() {
    let fx = Fixture::new();
    let junk = BuiltLayer {
        tar: b"this is not a tar archive".to_vec(),
        blob: b"this is not a tar archive".to_vec(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    let err = refused(&fx, &one_layer(junk.clone()));
    assert!(
        err.contains("is not a valid tar archive") && err.contains(&junk.digest().to_string()),
        "{err}"
    );

    // 2 KiB of noise: a header with a bad checksum.
    let fx = Fixture::new();
    let noise: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let junk = BuiltLayer {
        tar: noise.clone(),
        blob: noise,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    let err = refused(&fx, &one_layer(junk));
    assert!(err.contains("is not a valid tar archive"), "{err}");
}

#[test]
fn a_truncated_gzip_stream_is_refused() {
    let fx = Fixture::new();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut layer = Layer::new()
        .file("big", &big, 0o644)
        .build(Compression::Gzip);
    // The blob is cut short, but its digest is that of the cut blob, so it
    // passes blob verification and must be caught by the decoder.
    layer.blob.truncate(layer.blob.len() / 2);
    let err = refused(&fx, &one_layer(layer.clone()));
    assert!(
        err.contains("gzip stream is corrupt or truncated")
            && err.contains(&layer.digest().to_string()),
        "{err}"
    );

    // Cut inside the trailer: the tar is complete, the CRC is not.
    let fx = Fixture::new();
    let mut layer = Layer::new()
        .file("small", b"small", 0o644)
        .build(Compression::Gzip);
    layer.blob.truncate(layer.blob.len() - 4);
    let err = refused(&fx, &one_layer(layer));
    assert!(err.contains("gzip stream is corrupt or truncated"), "{err}");
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused_by_name() {
    let fx = Fixture::new();
    let layer = Layer::new()
        .file("f", b"original", 0o644)
        .build(Compression::Gzip);
    let digest = layer.digest();
    let img = one_layer(layer);
    img.write_layout(&fx.path("layout"), None).unwrap();
    // Tamper with the layer after the manifest was written.
    let blob = fx.path("layout/blobs/sha256").join(digest.hex());
    let mut tampered = Layer::new()
        .file("f", b"evil!!!!", 0o644)
        .build(Compression::Gzip)
        .blob;
    tampered.resize(img.layers[0].blob.len(), 0);
    fs::write(&blob, &tampered).unwrap();
    let err = fx
        .images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("blob {digest} failed verification")),
        "{err}"
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(
        fx.images.store().blob_size(&digest).unwrap(),
        None,
        "unverified blob stored"
    );
    fx.assert_untouched();

    // The same in an OCI archive, where blobs are verified while streaming.
    let fx = Fixture::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &img.index_json(None));
    for (d, bytes) in &img.blobs {
        let data = if *d == digest { &tampered } else { bytes };
        add(&format!("blobs/sha256/{}", d.hex()), data);
    }
    let archive = fx.path("bad.tar");
    fs::File::create(&archive)
        .unwrap()
        .write_all(&tar.into_inner().unwrap())
        .unwrap();
    let err = fx
        .images
        .import_archive(&archive, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("blob {digest} failed verification")),
        "{err}"
    );
    fx.assert_untouched();

    // A short blob: a size mismatch, also named.
    let fx = Fixture::new();
    img.write_layout(&fx.path("layout"), None).unwrap();
    let blob = fx.path("layout/blobs/sha256").join(digest.hex());
    let mut short = fs::read(&blob).unwrap();
    short.pop();
    fs::write(&blob, short).unwrap();
    let err = fx
        .images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&digest.to_string()) && err.contains("size mismatch"),
        "{err}"
    );
}

#[test]
fn a_layer_that_differs_from_its_diff_id_is_refused() {
    let fx = Fixture::new();
    let honest = Layer::new()
        .file("f", b"honest", 0o644)
        .build(Compression::Gzip);
    let swapped = Layer::new()
        .file("f", b"swapped", 0o644)
        .build(Compression::Gzip);
    // Config announces the honest diff_id, the manifest points at another blob.
    let mut img = one_layer(honest.clone());
    let manifest: serde_json::Value = serde_json::from_slice(&img.blobs[&img.manifest]).unwrap();
    let mut m = manifest.clone();
    m["layers"][0]["digest"] = swapped.digest().to_string().into();
    m["layers"][0]["size"] = swapped.blob.len().into();
    let bytes = m.to_string().into_bytes();
    img.blobs.remove(&img.manifest);
    img.manifest = Digest::sha256_of(&bytes);
    img.blobs.insert(img.manifest.clone(), bytes);
    img.blobs.insert(swapped.digest(), swapped.blob.clone());
    let err = refused(&fx, &img);
    assert!(
        err.contains("decompresses to") && err.contains(&honest.diff_id().to_string()),
        "{err}"
    );
}

#[test]
fn malformed_documents_are_refused() {
    let fx = Fixture::new();
    fs::create_dir(fx.path("layout")).unwrap();
    fs::write(
        fx.path("layout/oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(fx.path("layout/index.json"), b"{not json").unwrap();
    let err = fx
        .images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap_err();
    assert!(matches!(err, ImageError::Import(_)), "{err}");
    assert!(err.to_string().contains("index.json is not valid"), "{err}");

    // A digest that tries to be a path.
    fs::write(
        fx.path("layout/index.json"),
        br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../../etc/passwd","size":1}]}"#,
    )
    .unwrap();
    let err = fx
        .images
        .import_layout(&fx.path("layout"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index.json is not valid") || err.contains("digest"),
        "{err}"
    );

    let not_archive = fx.path("plain.txt");
    fs::write(&not_archive, b"hello").unwrap();
    let err = fx
        .images
        .import_archive(&not_archive, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("plain.txt"), "{err}");
    fx.assert_untouched();
}
