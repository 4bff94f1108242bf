//! Registry pulls against Debian's `docker-registry` on 127.0.0.1: plain
//! HTTP, TLS with a CA made here, basic auth, bearer tokens from a token
//! server run by the test; images pushed with `skopeo`
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
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

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
    /// Bearer tokens from this server (exclusive with `basic_auth`).
    token_auth: Option<&'a TokenServer>,
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
        if let Some(server) = config.token_auth {
            yaml += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm(),
                server.signer.cert.display()
            );
            let (user, password) = &server.user;
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

/// Anonymous access, a wrong password and an unknown user are each refused
/// as `AuthRefused`, and the real password never shows in the error.
fn assert_wrong_credentials_refused(
    images: &Images,
    reference: &str,
    with: impl Fn(Credentials) -> PullOptions,
) {
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
        let err = registry_error(pull(images, reference, &with(wrong.clone())).0);
        assert!(
            matches!(err, RegistryError::AuthRefused { .. }),
            "{wrong:?}: {err}"
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
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
        ..RegistryConfig::default()
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

    assert_wrong_credentials_refused(&fx.images, &reference, with);
    fx.assert_tmp_empty();

    let right = Credentials::Basic {
        username: "cocoon".into(),
        password: "s3cret".into(),
    };
    let pulled = pull(&fx.images, &reference, &with(right)).0.unwrap();
    assert_eq!(pulled.record.manifest, built.manifest);
}

/// What `docker-registry` is told to expect in tokens (`service` is the
/// audience).
const TOKEN_SERVICE: &str = "cocoon-test";
const TOKEN_ISSUER: &str = "cocoon-test-issuer";

/// Signs registry tokens: an RSA key and a self-signed certificate for it,
/// made with `openssl`. The registry trusts the certificate
/// (`rootcertbundle`); each token carries it in its `x5c` header, which is
/// how the registry finds the key to check the RS256 signature with.
#[derive(Clone)]
struct TokenSigner {
    key: PathBuf,
    cert: PathBuf,
    /// The certificate, base64 DER (an `x5c` entry).
    x5c: String,
}

impl TokenSigner {
    fn new(dir: &Path) -> TokenSigner {
        require("openssl", "openssl");
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=cocoon test token signer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success(), "openssl x509 -outform DER failed");
        TokenSigner {
            key,
            cert,
            x5c: STANDARD.encode(der.stdout),
        }
    }

    /// A JWT for `subject` granting `access` (`[{type, name, actions}]`),
    /// valid over `valid` (seconds from now).
    fn token(&self, subject: &str, access: serde_json::Value, valid: Range<i64>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + valid.end,
            "nbf": now + valid.start,
            "iat": now,
            "jti": format!("cocoon-{now}-{}", std::process::id()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // RS256 is RSASSA-PKCS1-v1_5 over SHA-256: what `dgst -sign` makes
        // with an RSA key.
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl dgst -sign failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

/// `access` for one repository.
fn repo_access(name: &str, actions: &[&str]) -> serde_json::Value {
    serde_json::json!([{"type": "repository", "name": name, "actions": actions}])
}

/// A token server on 127.0.0.1 answering `GET /token?scope=..&service=..`
/// the way the registry's `realm` expects: for the right user and password
/// (basic auth) a token granting every scope asked for, otherwise 401.
/// Stopped on drop.
struct TokenServer {
    port: u16,
    signer: TokenSigner,
    user: (String, String),
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    fn start(signer: TokenSigner, user: &str, password: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let user = (user.to_owned(), password.to_owned());
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (signer, user) = (signer.clone(), user.clone());
            let (issued, refused, stop) = (issued.clone(), refused.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    // An I/O error loses only that answer; the counts and
                    // the pull's result show it.
                    match answer_token_request(stream, &signer, &user) {
                        Ok(true) => {
                            issued.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => eprintln!("token server: {e}"),
                    }
                }
            })
        };
        TokenServer {
            port,
            signer,
            user,
            issued,
            refused,
            stop,
            thread: Some(thread),
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream`; true when a token was issued.
fn answer_token_request(
    stream: TcpStream,
    signer: &TokenSigner,
    (user, password): &(String, String),
) -> std::io::Result<bool> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(&str, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, percent_decode(v)))
        .collect();
    let service_ok = params
        .iter()
        .any(|(k, v)| *k == "service" && v == TOKEN_SERVICE);
    let credentials_ok = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .is_some_and(|decoded| decoded == format!("{user}:{password}").as_bytes());

    let mut stream = stream;
    if path != "/token" || !service_ok || !credentials_ok {
        let body = r#"{"details":"authentication required"}"#;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(false);
    }
    // Every scope asked for (`repository:NAME:pull,push`) is granted.
    let access: Vec<serde_json::Value> = params
        .iter()
        .filter(|(k, _)| *k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let token = signer.token(user, access.into(), -10..300);
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(true)
}

/// `application/x-www-form-urlencoded` decoding of a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bearer_token_auth_pulls_with_a_token_and_refuses_without() {
    let keys = tempfile::tempdir().unwrap();
    let signer = TokenSigner::new(keys.path());
    let tokens = TokenServer::start(signer.clone(), "cocoon", "s3cret");
    let reg = Registry::start(RegistryConfig {
        token_auth: Some(&tokens),
        ..RegistryConfig::default()
    });
    let fx = Fixture::new();
    let built = test_image("token");
    let layout = fx.path("layout");
    built.write_layout(&layout, Some("v1")).unwrap();
    // skopeo does the token dance too, for pull and push.
    reg.push(&layout, "v1", "private/test:v1", false);
    let reference = format!("{}/private/test:v1", reg.host());
    let with = |credentials| PullOptions {
        insecure: vec![reg.host()],
        credentials,
        ..PullOptions::default()
    };

    // The token server refuses these. oci-client drops that refusal and
    // asks the registry without a token, which answers 401.
    let refused_before = tokens.refused();
    assert_wrong_credentials_refused(&fx.images, &reference, with);
    assert_eq!(tokens.refused(), refused_before + 3);

    // Tokens the registry itself refuses: for another repository, signed
    // by a key it does not trust, expired. Its log says why (oci-client's
    // error is a bare 401), which tells these from a malformed token.
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = TokenSigner::new(elsewhere.path());
    let pull_access = repo_access("private/test", &["pull"]);
    for (what, token, logged) in [
        (
            "other repository",
            signer.token("cocoon", repo_access("private/other", &["pull"]), -10..300),
            "insufficient scope",
        ),
        (
            "untrusted key",
            stranger.token("cocoon", pull_access.clone(), -10..300),
            "invalid token",
        ),
        (
            "expired",
            signer.token("cocoon", pull_access.clone(), -3600..-600),
            "invalid token",
        ),
    ] {
        let seen = |reg: &Registry| reg.log().matches(logged).count();
        let before = seen(&reg);
        let err = registry_error(pull(&fx.images, &reference, &with(Credentials::Token(token))).0);
        assert!(
            matches!(err, RegistryError::AuthRefused { .. }),
            "{what}: {err}"
        );
        assert!(seen(&reg) > before, "{what}: registry log:\n{}", reg.log());
    }
    assert!(fx.images.list().unwrap().is_empty());
    fx.assert_tmp_empty();

    // The right user: oci-client fetches a token and pulls with it.
    let issued_before = tokens.issued();
    let right = Credentials::Basic {
        username: "cocoon".into(),
        password: "s3cret".into(),
    };
    let pulled = pull(&fx.images, &reference, &with(right)).0.unwrap();
    assert_eq!(pulled.record.manifest, built.manifest);
    assert!(tokens.issued() > issued_before, "no token was fetched");

    // A token issued beforehand, sent as is: every blob comes with it
    // (a fresh store, so nothing is skipped).
    let issued_before = tokens.issued();
    let fresh = Fixture::new();
    let token = signer.token("cocoon", pull_access, -10..300);
    let (pulled, events) = pull(&fresh.images, &reference, &with(Credentials::Token(token)));
    assert_eq!(pulled.unwrap().record.manifest, built.manifest);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, PullEvent::LayerDone { cached: false, .. }))
            .count(),
        3
    );
    assert_eq!(tokens.issued(), issued_before, "the token server was asked");
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
