//! Registry pulls against Debian's `docker-registry` on 127.0.0.1: plain
//! HTTP, TLS with a CA made here, basic auth; images pushed with `skopeo`
//! from OCI layouts built here and compared with direct imports of the same
//! layouts. Failures come back as the error kinds a CLI prints (unknown
//! image, unreachable, auth refused, TLS, digest mismatch).
//!
//! Each test starts its own registry (random port, temporary storage, a
//! config written here); nothing leaves loopback. A missing tool fails the
//! test naming the Debian package (`scripts/deps.sh` installs them all).

// Helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_runtime::image::build::{BuiltImage, ImageBuilder, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use cocoon_runtime::image::unpack::Compression;
use cocoon_runtime::image::{
    Credentials, DiskFormat, ImageError, Images, ImportedImage, PullEvent, PullOptions,
    RegistryError,
};
use common::{image, snapshot, Fixture, Layer, Node};

/// Fails (never skips) when `tool` is missing, naming its package.
fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{tool} not found: install Debian's {package} package (scripts/deps.sh does)")
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    require("openssl", "openssl");
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cocoon test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("server.crt")));
    Pki {
        ca: p("ca.crt"),
        cert: p("server.crt"),
        key: p("server.key"),
    }
}

#[derive(Default)]
struct RegistryConfig<'a> {
    tls: Option<&'a Pki>,
    /// user, password
    basic_auth: Option<(&'a str, &'a str)>,
}

/// A `docker-registry` child on 127.0.0.1, killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    creds: Option<String>,
}

impl Registry {
    fn start(config: RegistryConfig<'_>) -> Registry {
        let bin = require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cocoon-test-only\n",
            storage.display()
        );
        if let Some(pki) = config.tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.cert.display(),
                pki.key.display()
            );
        }
        let mut creds = None;
        if let Some((user, password)) = config.basic_auth {
            require("htpasswd", "apache2-utils");
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-B", "-b", "-n", user, password])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd failed");
            fs::write(&htpasswd, &out.stdout).unwrap();
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: cocoon-test\n    path: {}\n",
                htpasswd.display()
            );
            creds = Some(format!("{user}:{password}"));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, yaml).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut reg = Registry {
            child,
            dir,
            port,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = reg.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}): {}", reg.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening after 30 s: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the image of OCI layout `layout` (ref name `src_ref`) as
    /// `repo:tag`; `all` copies every image of an index.
    fn push(&self, layout: &Path, src_ref: &str, repo_tag: &str, all: bool) {
        require("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some(c) = &self.creds {
            cmd.arg("--dest-creds").arg(c);
        }
        cmd.arg(format!("oci:{}:{src_ref}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Where the registry keeps blob `digest`'s content.
    fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn insecure(reg: &Registry) -> PullOptions {
    PullOptions {
        insecure: vec![reg.host()],
        ..PullOptions::default()
    }
}

fn pull(
    images: &Images,
    reference: &str,
    options: &PullOptions,
) -> (Result<ImportedImage, ImageError>, Vec<PullEvent>) {
    let mut events = Vec::new();
    let result = images.pull_blocking(reference, None, options, &mut |e| events.push(e.clone()));
    (result, events)
}

fn registry_error(result: Result<ImportedImage, ImageError>) -> RegistryError {
    match result {
        Err(ImageError::Registry(e)) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "not one line: {line:?}");
            eprintln!("pull failed as expected: {line}");
            *e
        }
        Err(other) => panic!("expected a registry error, got {other}"),
        Ok(i) => panic!("pull succeeded: {}", i.record.manifest),
    }
}

/// Three layers, one per compression, with the entries that matter when
/// unpacking (ownership, modes, links, whiteouts).
fn test_image(seed: &str) -> BuiltImage {
    let l1 = Layer::new()
        .dir("etc", 0o755)
        .dir_owned("etc/app", 0o750, 1000, 1000)
        .file_owned("etc/app/config", seed.as_bytes(), 0o640, 1000, 1000)
        .dir("bin", 0o755)
        .file("bin/tool", b"tool", 0o755)
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/sh", "/bin/tool")
        .file("gone", b"gone", 0o644)
        .build(Compression::Gzip);
    let l2 = Layer::new()
        .whiteout("gone")
        .file("etc/app/second", b"second", 0o600)
        .build(Compression::Zstd);
    let l3 = Layer::new()
        .file("big", &vec![7u8; 300 * 1024], 0o644)
        .build(Compression::None);
    image(vec![l1, l2, l3])
}

/// The unpacked tree without inode numbers (they differ between trees).
fn tree(images: &Images, name: &str, dest: &Path) -> BTreeMap<String, Node> {
    fs::create_dir(dest).unwrap();
    images.unpack(name, dest).unwrap();
    snapshot(dest)
        .into_iter()
        .map(|(k, mut n)| {
            n.ino = 0;
            (k, n)
        })
        .collect()
}

#[test]
fn pull_matches_a_direct_import_and_skips_stored_blobs() {
    let reg = Registry::start(RegistryConfig::default());
    let fx = Fixture::new();
    let built = test_image("pulled");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    reg.push(&layout, "v1", "cocoon/test:v1", false);
    let reference = format!("{}/cocoon/test:v1", reg.host());

    let (pulled, events) = pull(&fx.images, &reference, &insecure(&reg));
    let pulled = pulled.unwrap();
    assert_eq!(pulled.record.manifest, built.manifest);
    assert_eq!(pulled.tags, vec![reference.clone()]);
    assert_eq!(
        pulled.record.config.process.args(),
        vec!["/bin/tool".to_owned(), "--serve".to_owned()]
    );
    // Progress: the manifest, then every layer with bytes up to its size.
    let total: u64 = built.layers.iter().map(|l| l.blob.len() as u64).sum();
    assert_eq!(
        events.first(),
        Some(&PullEvent::Resolved {
            manifest: built.manifest.clone(),
            layers: 3,
            bytes: total,
        })
    );
    for (i, layer) in built.layers.iter().enumerate() {
        let size = layer.blob.len() as u64;
        let done: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                PullEvent::Layer {
                    index, done, total, ..
                } if *index == i => {
                    assert_eq!(*total, size);
                    Some(*done)
                }
                _ => None,
            })
            .collect();
        assert_eq!(done.last(), Some(&size), "layer {i} progress");
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "progress goes back");
        assert!(events.contains(&PullEvent::LayerDone {
            index: i,
            digest: layer.digest(),
            total: size,
            cached: false,
        }));
    }
    fx.assert_tmp_empty();

    // The same tree as importing the layout directly.
    let direct = Fixture::new();
    direct
        .images
        .import_layout(&layout, None, Some("direct"))
        .unwrap();
    assert_eq!(
        tree(&fx.images, &reference, &fx.path("pulled-tree")),
        tree(&direct.images, "direct", &direct.path("direct-tree"))
    );
    // Disks build from a pulled image like from an imported one.
    let disk = fx
        .images
        .root_disk(&reference, DiskFormat::DEFAULT)
        .unwrap();
    assert!(disk.built && disk.path.exists());

    // Again: nothing is downloaded, every layer comes from the store.
    let (again, events) = pull(&fx.images, &reference, &insecure(&reg));
    assert_eq!(again.unwrap().record, pulled.record);
    assert!(
        !events.iter().any(|e| matches!(e, PullEvent::Layer { .. })),
        "bytes downloaded again: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerDone { cached: true, .. }))
            .count(),
        3
    );

    // By digest, with a tag of the caller's choosing.
    let by_digest = format!("{}/cocoon/test@{}", reg.host(), built.manifest);
    let mut sink = |_: &PullEvent| {};
    let named = fx
        .images
        .pull_blocking(&by_digest, Some("mine"), &insecure(&reg), &mut sink)
        .unwrap();
    assert_eq!(named.record.manifest, built.manifest);
    assert_eq!(named.tags, vec!["mine:latest".to_owned()]);
}

#[test]
fn pull_resolves_an_index_to_linux_amd64() {
    let reg = Registry::start(RegistryConfig::default());
    let fx = Fixture::new();
    let amd64 = test_image("amd64");
    let arm64 = ImageBuilder::new()
        .platform("linux", "arm64")
        .layer(
            Layer::new()
                .file("arm", b"arm", 0o644)
                .build(Compression::Gzip),
        )
        .build();
    // One layout holding both images under an index named "multi".
    let layout = fx.path("multi");
    arm64.write_layout(&layout, None).unwrap();
    amd64.write_layout(&layout, None).unwrap();
    let entry = |img: &BuiltImage, arch: &str| {
        serde_json::json!({
            "mediaType": MEDIA_OCI_MANIFEST,
            "digest": img.manifest.to_string(),
            "size": img.blobs[&img.manifest].len(),
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [entry(&arm64, "arm64"), entry(&amd64, "amd64")],
    })
    .to_string();
    let index_digest = cocoon_runtime::image::Digest::sha256_of(index.as_bytes());
    fs::write(layout.join("blobs/sha256").join(index_digest.hex()), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_OCI_INDEX,
            "digest": index_digest.to_string(),
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    fs::write(layout.join("index.json"), top.to_string()).unwrap();
    reg.push(&layout, "multi", "cocoon/multi:v1", true);

    let (pulled, _) = pull(
        &fx.images,
        &format!("{}/cocoon/multi:v1", reg.host()),
        &insecure(&reg),
    );
    let pulled = pulled.unwrap();
    assert_eq!(pulled.record.manifest, amd64.manifest);
    // The index itself was verified and stored on the way.
    assert!(fx
        .images
        .store()
        .blob_size(&index_digest)
        .unwrap()
        .is_some());
    assert!(fx
        .images
        .store()
        .blob_size(&arm64.layers[0].digest())
        .unwrap()
        .is_none());
}

#[test]
fn pull_errors_say_what_failed() {
    let reg = Registry::start(RegistryConfig::default());
    let fx = Fixture::new();
    let built = test_image("errors");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    reg.push(&layout, "v1", "cocoon/test:v1", false);

    // Unknown tag, unknown repository.
    for missing in ["cocoon/test:nope", "cocoon/absent:v1"] {
        let reference = format!("{}/{missing}", reg.host());
        let err = registry_error(pull(&fx.images, &reference, &insecure(&reg)).0);
        assert!(
            matches!(err, RegistryError::UnknownImage { .. }),
            "{missing}: {err}"
        );
        assert!(err.to_string().contains(&reference), "{err}");
    }

    // Plain HTTP without asking for it: HTTPS is tried and fails.
    let reference = format!("{}/cocoon/test:v1", reg.host());
    let err = registry_error(pull(&fx.images, &reference, &PullOptions::default()).0);
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");

    // A blob the registry serves with other content: refused, naming it,
    // and nothing of it kept.
    let layer = built.layers[2].digest();
    let data = reg.blob_data(layer.hex());
    let mut content = fs::read(&data).unwrap();
    content[1000] ^= 0xff;
    fs::write(&data, content).unwrap();
    let err = registry_error(pull(&fx.images, &reference, &insecure(&reg)).0);
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    assert!(fx.images.store().blob_size(&layer).unwrap().is_none());
    assert!(fx.images.list().unwrap().is_empty());
    fx.assert_tmp_empty();
}

#[test]
fn unreachable_registry_is_reported() {
    let fx = Fixture::new();
    let host = format!("127.0.0.1:{}", free_port());
    let options = PullOptions {
        insecure: vec![host.clone()],
        connect_timeout: Duration::from_secs(5),
        ..PullOptions::default()
    };
    let err = registry_error(pull(&fx.images, &format!("{host}/any/image:v1"), &options).0);
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
}

#[test]
fn pull_over_tls_with_a_custom_ca() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let reg = Registry::start(RegistryConfig {
        tls: Some(&pki),
        ..RegistryConfig::default()
    });
    let fx = Fixture::new();
    let built = test_image("tls");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    reg.push(&layout, "v1", "secure/test:v1", false);
    let reference = format!("{}/secure/test:v1", reg.host());

    // Without the CA the certificate is not trusted.
    let err = registry_error(pull(&fx.images, &reference, &PullOptions::default()).0);
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");

    let with_ca = PullOptions {
        ca_file: Some(pki.ca.clone()),
        ..PullOptions::default()
    };
    let pulled = pull(&fx.images, &reference, &with_ca).0.unwrap();
    assert_eq!(pulled.record.manifest, built.manifest);
}

#[test]
fn pull_with_basic_auth() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let reg = Registry::start(RegistryConfig {
        tls: Some(&pki),
        basic_auth: Some(("cocoon", "s3cret")),
    });
    let fx = Fixture::new();
    let built = test_image("auth");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    reg.push(&layout, "v1", "private/test:v1", false);
    let reference = format!("{}/private/test:v1", reg.host());
    let with = |credentials| PullOptions {
        ca_file: Some(pki.ca.clone()),
        credentials,
        ..PullOptions::default()
    };

    for wrong in [
        Credentials::Anonymous,
        Credentials::Basic {
            username: "cocoon".into(),
            password: "wrong".into(),
        },
        Credentials::Basic {
            username: "nobody".into(),
            password: "s3cret".into(),
        },
    ] {
        let err = registry_error(pull(&fx.images, &reference, &with(wrong.clone())).0);
        assert!(
            matches!(err, RegistryError::AuthRefused { .. }),
            "{wrong:?}: {err}"
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    fx.assert_tmp_empty();

    let right = Credentials::Basic {
        username: "cocoon".into(),
        password: "s3cret".into(),
    };
    let pulled = pull(&fx.images, &reference, &with(right)).0.unwrap();
    assert_eq!(pulled.record.manifest, built.manifest);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("cocoon-test")
            .arg(dir.path()));
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_is_reported() {
    let reg = Registry::start(RegistryConfig::default());
    let fx = Fixture::new();
    let built = test_image("full");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    reg.push(&layout, "v1", "cocoon/big:v1", false);

    // Room for the documents and small layers, not for the 300 KiB one.
    let small = SmallFs::mount("192k");
    let images = Images::open(small.dir.path()).unwrap();
    let reference = format!("{}/cocoon/big:v1", reg.host());
    let err = registry_error(pull(&images, &reference, &insecure(&reg)).0);
    assert!(matches!(err, RegistryError::DiskFull { .. }), "{err}");
    assert!(images
        .store()
        .blob_size(&built.layers[2].digest())
        .unwrap()
        .is_none());
    let tmp: Vec<_> = fs::read_dir(images.store().root().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "partial download left: {tmp:?}");
}
