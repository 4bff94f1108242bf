//! Assembles small images from layer tarballs held in memory and writes them
//! as an OCI image layout, an OCI archive, or a legacy `docker save` archive.
//!
//! Cocoon uses it for its built-in busybox image and tests use it to make
//! images with exactly the entries they need. It is not an image builder:
//! no Dockerfile, no snapshotting of a directory; the caller brings the
//! layer tars. Output is deterministic: the same layers give the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;

use super::config::DefaultProcess;
use super::digest::Digest;
use super::unpack::Compression;

/// Media type of an OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image configuration.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip OCI layer.
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd OCI layer.
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The OCI media type of a layer with `compression`.
pub fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => MEDIA_OCI_LAYER,
        Compression::Gzip => MEDIA_OCI_LAYER_GZIP,
        Compression::Zstd => MEDIA_OCI_LAYER_ZSTD,
    }
}

/// One layer: its uncompressed tar and the blob as stored.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// The uncompressed tar stream.
    pub tar: Vec<u8>,
    /// The blob (the tar, compressed as asked).
    pub blob: Vec<u8>,
    /// The blob's media type.
    pub media_type: String,
}

impl BuiltLayer {
    /// Compresses `tar` with `compression`.
    pub fn new(tar: Vec<u8>, compression: Compression) -> io::Result<BuiltLayer> {
        let blob = match compression {
            Compression::None => tar.clone(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::stream::encode_all(&tar[..], 3)?,
        };
        Ok(BuiltLayer {
            tar,
            blob,
            media_type: layer_media_type(compression).to_owned(),
        })
    }

    /// The digest of the blob.
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.blob)
    }

    /// The digest of the uncompressed tar (the config's diff ID).
    pub fn diff_id(&self) -> Digest {
        Digest::sha256_of(&self.tar)
    }
}

/// An image assembled in memory: every blob by digest, and which one is the
/// manifest.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// Every blob (manifest, config, layers).
    pub blobs: BTreeMap<Digest, Vec<u8>>,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The config's digest.
    pub config: Digest,
    /// The layers, bottom first.
    pub layers: Vec<BuiltLayer>,
}

/// Builds a single-platform (linux/amd64 by default) image.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    layers: Vec<BuiltLayer>,
    process: DefaultProcess,
    os: String,
    architecture: String,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder {
            layers: Vec::new(),
            process: DefaultProcess {
                working_dir: "/".to_owned(),
                ..DefaultProcess::default()
            },
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            created: "1970-01-01T00:00:00Z".to_owned(),
        }
    }
}

impl ImageBuilder {
    /// An image with no layers, for linux/amd64.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a layer on top.
    pub fn layer(mut self, layer: BuiltLayer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets the default process.
    pub fn process(mut self, process: DefaultProcess) -> Self {
        self.process = process;
        self
    }

    /// Sets the platform written into the config.
    pub fn platform(mut self, os: &str, architecture: &str) -> Self {
        self.os = os.to_owned();
        self.architecture = architecture.to_owned();
        self
    }

    /// Produces the config, manifest and blobs.
    pub fn build(&self) -> BuiltImage {
        let p = &self.process;
        let config = json!({
            "created": self.created,
            "architecture": self.architecture,
            "os": self.os,
            "config": {
                "Entrypoint": p.entrypoint,
                "Cmd": p.cmd,
                "Env": p.env,
                "WorkingDir": p.working_dir,
                "User": p.user,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id().to_string()).collect::<Vec<_>>(),
            },
        });
        let config_bytes = config.to_string().into_bytes();
        let config_digest = Digest::sha256_of(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": MEDIA_OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": l.media_type,
                "digest": l.digest().to_string(),
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = manifest.to_string().into_bytes();
        let manifest_digest = Digest::sha256_of(&manifest_bytes);
        let mut blobs = BTreeMap::new();
        blobs.insert(config_digest.clone(), config_bytes);
        blobs.insert(manifest_digest.clone(), manifest_bytes);
        for l in &self.layers {
            blobs.insert(l.digest(), l.blob.clone());
        }
        BuiltImage {
            blobs,
            manifest: manifest_digest,
            config: config_digest,
            layers: self.layers.clone(),
        }
    }
}

impl BuiltImage {
    /// The `index.json` of a layout holding this image, with the
    /// `org.opencontainers.image.ref.name` annotation when `ref_name` is set.
    pub fn index_json(&self, ref_name: Option<&str>) -> Vec<u8> {
        let mut desc = json!({
            "mediaType": MEDIA_OCI_MANIFEST,
            "digest": self.manifest.to_string(),
            "size": self.blobs.get(&self.manifest).map_or(0, Vec::len),
            "platform": {"architecture": "amd64", "os": "linux"},
        });
        if let Some(name) = ref_name {
            desc["annotations"] = json!({ "org.opencontainers.image.ref.name": name });
        }
        json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [desc],
        })
        .to_string()
        .into_bytes()
    }

    /// Writes an OCI image layout into directory `dir` (created if needed).
    pub fn write_layout(&self, dir: &Path, ref_name: Option<&str>) -> io::Result<()> {
        for (digest, bytes) in &self.blobs {
            let alg_dir = dir.join("blobs").join(digest.algorithm().name());
            fs::create_dir_all(&alg_dir)?;
            fs::write(alg_dir.join(digest.hex()), bytes)?;
        }
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        fs::write(dir.join("index.json"), self.index_json(ref_name))
    }

    /// Writes an OCI archive: the layout as a tar file.
    pub fn write_oci_archive(&self, path: &Path, ref_name: Option<&str>) -> io::Result<()> {
        let mut tar = tar::Builder::new(fs::File::create(path)?);
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append(&mut tar, "index.json", &self.index_json(ref_name))?;
        for (digest, bytes) in &self.blobs {
            let name = format!("blobs/{}/{}", digest.algorithm().name(), digest.hex());
            append(&mut tar, &name, bytes)?;
        }
        tar.into_inner()?.sync_all()
    }

    /// Writes a legacy `docker save` archive (`manifest.json`,
    /// `<config hex>.json`, `<n>/layer.tar` with uncompressed layers).
    pub fn write_docker_archive(&self, path: &Path, repo_tag: Option<&str>) -> io::Result<()> {
        let mut tar = tar::Builder::new(fs::File::create(path)?);
        let config_name = format!("{}.json", self.config.hex());
        let layer_names: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.diff_id().hex()))
            .collect();
        // Docker writes manifest.json last; readers must cope.
        let config = self.blobs.get(&self.config).cloned().unwrap_or_default();
        append(&mut tar, &config_name, &config)?;
        for (l, name) in self.layers.iter().zip(&layer_names) {
            append(&mut tar, name, &l.tar)?;
            let dir = name.trim_end_matches("/layer.tar");
            append(&mut tar, &format!("{dir}/VERSION"), b"1.0")?;
        }
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": repo_tag.map(|t| vec![t]).unwrap_or_default(),
            "Layers": layer_names,
        }]);
        append(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
        tar.into_inner()?.sync_all()
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)
}
