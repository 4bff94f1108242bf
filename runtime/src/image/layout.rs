//! Imports images from an OCI image layout directory, an OCI archive (a
//! layout in a tar file) or a `docker save` archive into the store.
//!
//! Indexes and manifest lists are resolved to linux/amd64; every blob is
//! copied into the store through digest and size verification before it is
//! parsed or used, and a mismatch is an error naming the blob. Archives are
//! read in one streaming pass (optionally gzip or zstd compressed) without
//! extracting anything to disk except verified blobs; archive entry names are
//! only used as keys, never as paths to write.
//!
//! This module produces an [`ImageRecord`]; it does not save it, tag it,
//! unpack layers or build disks. Registry pulls live in `registry.rs`, which
//! fetches blobs into the store and then uses [`record_from_store`] and
//! [`select_platform`] from here, so both paths check images the same way.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::build::{layer_media_type, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST};
use super::catalog::{ImageRecord, LayerRecord};
use super::config::{ConfigError, ImageConfig};
use super::digest::{Digest, DigestError};
use super::store::{Store, StoreError};
use super::unpack::Compression;

/// Largest JSON document (index, manifest, config) accepted.
pub const MAX_JSON: u64 = 8 << 20;
/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;
/// Annotation naming an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd writes with the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

pub(crate) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub(crate) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
pub(crate) const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Errors from importing an image.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Storing or reading a blob failed, or a blob did not verify.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading the source failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The source is not an image layout or archive.
    #[error("{path} is not an OCI layout or image archive: {reason}")]
    NotAnImage {
        /// The source.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A JSON document does not parse.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which document (with its digest when it has one).
        what: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A digest written in a document or file name is malformed.
    #[error("{what}: {source}")]
    Digest {
        /// Where it was found.
        what: String,
        /// What is wrong.
        source: DigestError,
    },
    /// A blob the image needs is neither in the source nor in the store.
    #[error("blob {digest} is missing from {source_path}")]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// The source.
        source_path: PathBuf,
    },
    /// A descriptor has a media type Cocoon does not handle there.
    #[error("{what} {digest} has unsupported media type {media_type:?}")]
    MediaType {
        /// `manifest`, `config`, `layer`...
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// No manifest for linux/amd64.
    #[error("no linux/amd64 image in {source_path} (found: {found})")]
    NoPlatform {
        /// The source.
        source_path: PathBuf,
        /// The platforms on offer.
        found: String,
    },
    /// The config says another platform.
    #[error("image {manifest} is for {os}/{architecture}, not linux/amd64")]
    WrongPlatform {
        /// The manifest.
        manifest: Digest,
        /// Its OS.
        os: String,
        /// Its architecture.
        architecture: String,
    },
    /// No image in the source has the requested name.
    #[error("no image named {reference:?} in {source_path} (names: {available})")]
    UnknownReference {
        /// The requested name.
        reference: String,
        /// The source.
        source_path: PathBuf,
        /// The names it has.
        available: String,
    },
    /// Several images and no name to choose one.
    #[error("{source_path} holds several images, name one of: {names}")]
    Ambiguous {
        /// The source.
        source_path: PathBuf,
        /// Their names.
        names: String,
    },
    /// Manifest and config disagree on the number of layers.
    #[error("image {manifest} has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCount {
        /// The manifest.
        manifest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// Indexes nest deeper than Cocoon follows.
    #[error("image indexes in {0} nest too deep")]
    TooDeep(PathBuf),
    /// A document is larger than [`MAX_JSON`].
    #[error("{what} is {size} bytes, more than the {MAX_JSON} accepted")]
    TooLarge {
        /// Which document.
        what: String,
        /// Its announced or actual size.
        size: u64,
    },
    /// An archive names a file it does not contain.
    #[error("{archive}: manifest.json names {path:?}, which the archive does not contain")]
    MissingFile {
        /// The archive.
        archive: PathBuf,
        /// The missing path.
        path: String,
    },
}

/// An image read from a source, with the names the source gives it.
#[derive(Clone, Debug)]
pub struct Imported {
    /// What to save in the catalog.
    pub record: ImageRecord,
    /// Names found in the source (`RepoTags`, ref name annotations).
    pub names: Vec<String>,
}

/// Where blobs come from.
enum Source<'a> {
    /// `<layout>/blobs/<alg>/<hex>`.
    Dir(&'a Path),
    /// Already ingested into the store (from an archive).
    Store(&'a Path),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::Dir(p) | Source::Store(p) => p,
        }
    }

    /// Makes sure the blob is in the store, verified.
    fn fetch(&self, store: &Store, digest: &Digest, size: u64) -> Result<(), LayoutError> {
        if store.blob_size(digest)?.is_some() {
            // Stored blobs were verified on the way in; this checks size.
            store.ingest(io::empty(), digest, Some(size))?;
            return Ok(());
        }
        match self {
            Source::Dir(root) => {
                let path = root
                    .join("blobs")
                    .join(digest.algorithm().name())
                    .join(digest.hex());
                let file = match OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(LayoutError::MissingBlob {
                            digest: digest.clone(),
                            source_path: root.to_path_buf(),
                        })
                    }
                    Err(source) => {
                        return Err(LayoutError::Io {
                            op: "open",
                            path,
                            source,
                        })
                    }
                };
                store.ingest(file, digest, Some(size))?;
                Ok(())
            }
            Source::Store(path) => Err(LayoutError::MissingBlob {
                digest: digest.clone(),
                source_path: path.to_path_buf(),
            }),
        }
    }

    /// Fetches a JSON document and returns its bytes.
    fn fetch_json(
        &self,
        store: &Store,
        what: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, LayoutError> {
        if size > MAX_JSON {
            return Err(LayoutError::TooLarge {
                what: format!("{what} {digest}"),
                size,
            });
        }
        self.fetch(store, digest, size)?;
        Ok(store.read_blob(digest, MAX_JSON)?)
    }
}

/// Imports the image from the OCI layout in `dir`. `reference` picks an
/// image by its `org.opencontainers.image.ref.name` annotation when the
/// layout holds several.
pub fn import_layout(
    store: &Store,
    dir: &Path,
    reference: Option<&str>,
) -> Result<Imported, LayoutError> {
    let layout = read_small(&dir.join("oci-layout"))?.ok_or_else(|| LayoutError::NotAnImage {
        path: dir.to_owned(),
        reason: "no oci-layout file".into(),
    })?;
    check_layout_version(dir, &layout)?;
    let index = read_small(&dir.join("index.json"))?.ok_or_else(|| LayoutError::NotAnImage {
        path: dir.to_owned(),
        reason: "no index.json".into(),
    })?;
    import_index(store, &Source::Dir(dir), &index, reference)
}

/// Imports the image from an OCI archive or a `docker save` archive (plain,
/// gzip or zstd compressed). `reference` picks an image by ref name or
/// `RepoTags` entry when the archive holds several.
pub fn import_archive(
    store: &Store,
    path: &Path,
    reference: Option<&str>,
) -> Result<Imported, LayoutError> {
    let file = File::open(path).map_err(|source| LayoutError::Io {
        op: "open",
        path: path.to_owned(),
        source,
    })?;
    let contents = scan_archive(store, path, file)?;
    if let Some(index) = contents.meta.get("index.json") {
        if let Some(layout) = contents.meta.get("oci-layout") {
            check_layout_version(path, layout)?;
        }
        return import_index(store, &Source::Store(path), index, reference);
    }
    if let Some(manifest) = contents.meta.get("manifest.json") {
        return import_docker(store, path, &contents, manifest, reference);
    }
    Err(LayoutError::NotAnImage {
        path: path.to_owned(),
        reason: "neither index.json nor manifest.json in the archive".into(),
    })
}

fn check_layout_version(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    #[derive(Deserialize)]
    struct OciLayout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: OciLayout = serde_json::from_slice(bytes).map_err(|source| LayoutError::Json {
        what: format!("{}: oci-layout", path.display()),
        source,
    })?;
    if !layout.version.starts_with("1.") {
        return Err(LayoutError::NotAnImage {
            path: path.to_owned(),
            reason: format!("unsupported imageLayoutVersion {:?}", layout.version),
        });
    }
    Ok(())
}

/// Reads a small file, `None` when absent.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>, LayoutError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayoutError::Io {
                op: "open",
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut buf = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(|source| LayoutError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_JSON {
        return Err(LayoutError::TooLarge {
            what: path.display().to_string(),
            size: buf.len() as u64,
        });
    }
    Ok(Some(buf))
}

pub(crate) fn desc_digest(what: &str, d: &Descriptor) -> Result<Digest, LayoutError> {
    Digest::try_from(d.digest()).map_err(|source| LayoutError::Digest {
        what: format!("{what} descriptor"),
        source,
    })
}

fn names_of(d: &Descriptor) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = d.annotations() {
        for key in [CONTAINERD_NAME, REF_NAME] {
            if let Some(v) = a.get(key) {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        }
    }
    out
}

fn platform_of(d: &Descriptor) -> String {
    match d.platform() {
        Some(p) => format!("{}/{}", p.os(), p.architecture()),
        None => "unspecified".to_owned(),
    }
}

fn wants_platform(d: &Descriptor) -> bool {
    match d.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == "amd64",
    }
}

fn import_index(
    store: &Store,
    src: &Source<'_>,
    index_bytes: &[u8],
    reference: Option<&str>,
) -> Result<Imported, LayoutError> {
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|source| LayoutError::Json {
            what: format!("{}: index.json", src.path().display()),
            source,
        })?;
    let mut candidates: Vec<&Descriptor> = index.manifests().iter().collect();
    if let Some(r) = reference {
        let all: BTreeSet<String> = candidates.iter().flat_map(|d| names_of(d)).collect();
        candidates.retain(|d| names_of(d).iter().any(|n| n == r));
        if candidates.is_empty() {
            return Err(LayoutError::UnknownReference {
                reference: r.to_owned(),
                source_path: src.path().to_owned(),
                available: join_or_none(all),
            });
        }
    }
    let (desc, names) = select(src, &candidates, reference.is_none())?;
    let desc = desc.clone();
    let mut depth = 0;
    let mut current = desc;
    loop {
        let digest = desc_digest("manifest", &current)?;
        let media = current.media_type().to_string();
        if MANIFEST_TYPES.contains(&media.as_str()) {
            let record = import_manifest(store, src, &digest, current.size())?;
            return Ok(Imported { record, names });
        }
        if !INDEX_TYPES.contains(&media.as_str()) {
            return Err(LayoutError::MediaType {
                what: "manifest",
                digest,
                media_type: media,
            });
        }
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(LayoutError::TooDeep(src.path().to_owned()));
        }
        let bytes = src.fetch_json(store, "index", &digest, current.size())?;
        let nested: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
                what: format!("index {digest}"),
                source,
            })?;
        let nested_candidates: Vec<&Descriptor> = nested.manifests().iter().collect();
        let (next, _) = select(src, &nested_candidates, false)?;
        current = next.clone();
    }
}

/// Picks the linux/amd64 entry of an index fetched from `source` (a
/// registry reference, used in errors).
pub(crate) fn select_platform<'d>(
    source: &Path,
    candidates: &[&'d Descriptor],
) -> Result<&'d Descriptor, LayoutError> {
    Ok(select(&Source::Store(source), candidates, false)?.0)
}

/// Builds the record of the image whose manifest, config and layers are all
/// in the store already (verified), with every check an import makes.
/// `source` names where they came from, for errors.
pub(crate) fn record_from_store(
    store: &Store,
    source: &Path,
    manifest: &Digest,
    size: u64,
) -> Result<ImageRecord, LayoutError> {
    import_manifest(store, &Source::Store(source), manifest, size)
}

/// Picks the linux/amd64 entry among `candidates`. With `require_unique`,
/// several differently named images are an error rather than a guess.
fn select<'d>(
    src: &Source<'_>,
    candidates: &[&'d Descriptor],
    require_unique: bool,
) -> Result<(&'d Descriptor, Vec<String>), LayoutError> {
    let matching: Vec<&Descriptor> = candidates
        .iter()
        .copied()
        .filter(|d| wants_platform(d))
        .collect();
    let Some(first) = matching.first() else {
        let found: BTreeSet<String> = candidates.iter().map(|d| platform_of(d)).collect();
        return Err(LayoutError::NoPlatform {
            source_path: src.path().to_owned(),
            found: join_or_none(found),
        });
    };
    let distinct: BTreeSet<Vec<String>> = matching.iter().map(|d| names_of(d)).collect();
    if require_unique && distinct.len() > 1 {
        return Err(LayoutError::Ambiguous {
            source_path: src.path().to_owned(),
            names: join_or_none(distinct.into_iter().flatten().collect()),
        });
    }
    Ok((first, names_of(first)))
}

fn join_or_none(set: BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn import_manifest(
    store: &Store,
    src: &Source<'_>,
    digest: &Digest,
    size: u64,
) -> Result<ImageRecord, LayoutError> {
    let bytes = src.fetch_json(store, "manifest", digest, size)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
            what: format!("manifest {digest}"),
            source,
        })?;
    if let Some(mt) = manifest.media_type() {
        let mt = mt.to_string();
        if !MANIFEST_TYPES.contains(&mt.as_str()) {
            return Err(LayoutError::MediaType {
                what: "manifest",
                digest: digest.clone(),
                media_type: mt,
            });
        }
    }
    let config = Blob::from_desc("config", manifest.config())?;
    let layers = manifest
        .layers()
        .iter()
        .map(|d| Blob::from_desc("layer", d))
        .collect::<Result<Vec<_>, _>>()?;
    assemble(store, src, digest.clone(), config, layers)
}

/// A descriptor reduced to what Cocoon uses.
struct Blob {
    digest: Digest,
    size: u64,
    media_type: String,
}

impl Blob {
    fn from_desc(what: &str, d: &Descriptor) -> Result<Blob, LayoutError> {
        Ok(Blob {
            digest: desc_digest(what, d)?,
            size: d.size(),
            media_type: d.media_type().to_string(),
        })
    }
}

/// Fetches config and layers, checks them against each other and builds
/// the record. Shared by OCI and Docker sources.
fn assemble(
    store: &Store,
    src: &Source<'_>,
    manifest: Digest,
    config: Blob,
    layers: Vec<Blob>,
) -> Result<ImageRecord, LayoutError> {
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(LayoutError::MediaType {
            what: "config",
            digest: config.digest,
            media_type: config.media_type,
        });
    }
    let config_bytes = src.fetch_json(store, "config", &config.digest, config.size)?;
    let parsed = ImageConfig::parse(&config.digest, &config_bytes)?;
    if parsed.os != "linux" || parsed.architecture != "amd64" {
        return Err(LayoutError::WrongPlatform {
            manifest,
            os: parsed.os,
            architecture: parsed.architecture,
        });
    }
    if layers.len() != parsed.diff_ids.len() {
        return Err(LayoutError::LayerCount {
            manifest,
            layers: layers.len(),
            diff_ids: parsed.diff_ids.len(),
        });
    }
    let mut records = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.into_iter().zip(&parsed.diff_ids) {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(LayoutError::MediaType {
                what: "layer",
                digest: layer.digest,
                media_type: layer.media_type,
            });
        }
        src.fetch(store, &layer.digest, layer.size)?;
        records.push(LayerRecord {
            digest: layer.digest,
            media_type: layer.media_type,
            size: layer.size,
            diff_id: diff_id.clone(),
        });
    }
    Ok(ImageRecord {
        manifest,
        config_digest: config.digest,
        config: parsed,
        layers: records,
    })
}

/// What one pass over an archive found.
#[derive(Default)]
struct ArchiveContents {
    /// `index.json`, `oci-layout`, `manifest.json`.
    meta: HashMap<String, Vec<u8>>,
    /// Every other regular file, by normalised path: the digest it was
    /// stored under.
    files: HashMap<String, Digest>,
    /// Symlinks and hard links: path to normalised target path.
    links: HashMap<String, String>,
}

fn scan_archive(store: &Store, path: &Path, file: File) -> Result<ArchiveContents, LayoutError> {
    let not_tar = |e: io::Error| LayoutError::NotAnImage {
        path: path.to_owned(),
        reason: format!("not a readable tar archive: {e}"),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(|source| LayoutError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    let decoded: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(not_tar)?)
        }
    };
    let mut archive = tar::Archive::new(decoded);
    let mut out = ArchiveContents::default();
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let Some(name) = normalize(&entry.path_bytes()) else {
            continue; // not UTF-8 or escaping: never a name an image uses
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if matches!(name.as_str(), "index.json" | "oci-layout" | "manifest.json") {
                    if entry.size() > MAX_JSON {
                        return Err(LayoutError::TooLarge {
                            what: format!("{}: {name}", path.display()),
                            size: entry.size(),
                        });
                    }
                    let mut buf = Vec::new();
                    entry.read_to_end(&mut buf).map_err(not_tar)?;
                    out.meta.insert(name, buf);
                } else if let Some(digest) = blob_name(&name) {
                    let digest = digest.map_err(|source| LayoutError::Digest {
                        what: format!("{}: {name}", path.display()),
                        source,
                    })?;
                    let size = entry.size();
                    store.ingest(&mut entry, &digest, Some(size))?;
                    out.files.insert(name, digest);
                } else if name.ends_with(".json")
                    || name.ends_with(".tar")
                    || name.ends_with(".tar.gz")
                {
                    // Legacy docker save: configs and layers named by path.
                    let (digest, _) = store.ingest_unnamed(&mut entry)?;
                    out.files.insert(name, digest);
                }
            }
            tar::EntryType::Symlink => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let base = name.rsplit_once('/').map_or("", |(d, _)| d);
                let joined = format!("{base}/{}", String::from_utf8_lossy(&target));
                if let Some(t) = normalize(joined.as_bytes()) {
                    out.links.insert(name, t);
                }
            }
            tar::EntryType::Link => {
                if let Some(t) = entry.link_name_bytes().and_then(|t| normalize(&t)) {
                    out.links.insert(name, t);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `blobs/<alg>/<hex>` names a blob by digest.
fn blob_name(name: &str) -> Option<Result<Digest, DigestError>> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(format!("{alg}:{hex}").parse())
}

/// Normalises an archive path: UTF-8, no leading `/` or `./`, `..` resolved
/// without leaving the archive root.
fn normalize(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    path: &Path,
    contents: &ArchiveContents,
    manifest_json: &[u8],
    reference: Option<&str>,
) -> Result<Imported, LayoutError> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(manifest_json).map_err(|source| LayoutError::Json {
            what: format!("{}: manifest.json", path.display()),
            source,
        })?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(r) => {
            let with_latest = format!("{r}:latest");
            entries
                .iter()
                .find(|e| tags(e).iter().any(|t| t == r || *t == with_latest))
                .ok_or_else(|| LayoutError::UnknownReference {
                    reference: r.to_owned(),
                    source_path: path.to_owned(),
                    available: join_or_none(entries.iter().flat_map(tags).collect()),
                })?
        }
        None => match entries.as_slice() {
            [one] => one,
            [] => {
                return Err(LayoutError::NotAnImage {
                    path: path.to_owned(),
                    reason: "manifest.json lists no image".into(),
                })
            }
            _ => {
                return Err(LayoutError::Ambiguous {
                    source_path: path.to_owned(),
                    names: join_or_none(entries.iter().flat_map(tags).collect()),
                })
            }
        },
    };

    let lookup = |name: &str| -> Result<Digest, LayoutError> {
        let missing = || LayoutError::MissingFile {
            archive: path.to_owned(),
            path: name.chars().take(300).collect(),
        };
        let mut current = normalize(name.as_bytes()).ok_or_else(missing)?;
        for _ in 0..8 {
            if let Some(d) = contents.files.get(&current) {
                return Ok(d.clone());
            }
            match contents.links.get(&current) {
                Some(next) => current = next.clone(),
                None => break,
            }
        }
        Err(missing())
    };

    let config_digest = lookup(&entry.config)?;
    // Docker names the config after its digest: hold it to that.
    let config_file = entry.config.rsplit('/').next().unwrap_or(&entry.config);
    if let Some(hex) = config_file.strip_suffix(".json") {
        if let Ok(named) = format!("sha256:{hex}").parse::<Digest>() {
            if named != config_digest {
                return Err(StoreError::Verify {
                    digest: named.clone(),
                    source: DigestError::Mismatch {
                        expected: named,
                        actual: config_digest,
                    },
                }
                .into());
            }
        }
    }
    let config_size = store.blob_size(&config_digest)?.unwrap_or(0);
    let config = Blob {
        digest: config_digest,
        size: config_size,
        media_type: MEDIA_OCI_CONFIG.to_owned(),
    };
    let mut layers = Vec::new();
    for name in &entry.layers {
        let digest = lookup(name)?;
        let size = store.blob_size(&digest)?.unwrap_or(0);
        let mut head = [0u8; 4];
        let n = store
            .open_blob(&digest)?
            .read(&mut head)
            .map_err(|source| LayoutError::Io {
                op: "read",
                path: store.blob_path(&digest),
                source,
            })?;
        layers.push(Blob {
            digest,
            size,
            media_type: layer_media_type(Compression::sniff(&head[..n])).to_owned(),
        });
    }
    // The archive has no manifest blob: write the OCI manifest it implies,
    // so the image has an identity like any other.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let manifest_digest = store.put_bytes(manifest.to_string().as_bytes())?;
    let record = assemble(store, &Source::Store(path), manifest_digest, config, layers)?;
    Ok(Imported {
        record,
        names: tags(entry),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_normalize() {
        assert_eq!(
            normalize(b"./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize(b"a/../b").as_deref(), Some("b"));
        assert_eq!(normalize(b"../b"), None);
        assert_eq!(normalize(b"./"), None);
    }

    #[test]
    fn blob_names_are_digests() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            blob_name(&format!("blobs/sha256/{}", d.hex()))
                .unwrap()
                .unwrap(),
            d
        );
        assert!(blob_name("blobs/sha256/../../etc").unwrap().is_err());
        assert!(blob_name("manifest.json").is_none());
    }
}
