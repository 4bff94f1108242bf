//! What images the store holds and what they are called: one record per
//! imported image (keyed by manifest digest), tags, listing, removal, and
//! garbage collection of blobs and disks that no image needs.
//!
//! Records and `refs.json` are written atomically through the store. Tag
//! changes are serialised by `locks/refs.lock`; garbage collection takes
//! `locks/gc.lock` exclusively while imports and disk builds hold it shared,
//! so it never removes a blob an import has just written. This module does
//! not import, unpack or build anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::digest::{Algorithm, Digest};
use super::store::{list_dir, remove_file_if_exists, Store, StoreError};

/// Errors from the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No image has this name or digest.
    #[error("unknown image {0:?}")]
    Unknown(String),
    /// A tag is not a valid image name.
    #[error("invalid image name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record or `refs.json` is unreadable.
    #[error("corrupt store file {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Reading a record or `refs.json` failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// One layer of an imported image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRecord {
    /// The blob's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (from the config).
    pub diff_id: Digest,
}

/// An imported image: everything needed to build its disk and run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// The manifest's digest: the image's identity.
    pub manifest: Digest,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// What Cocoon keeps from the config.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

impl ImageRecord {
    /// Sum of the layer blob sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest, &self.config_digest]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// One line of `cocoon images`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// The manifest digest.
    pub digest: Digest,
    /// Names pointing at it.
    pub tags: Vec<String>,
    /// Sum of the layer sizes.
    pub size: u64,
    /// The config's `created`.
    pub created: Option<String>,
}

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Untagged, unused image records removed.
    pub images: Vec<Digest>,
    /// Blobs removed.
    pub blobs: usize,
    /// Disk images removed.
    pub disks: usize,
    /// Bytes freed (apparent sizes).
    pub bytes: u64,
    /// Leftovers of dead processes removed from `tmp/`.
    pub temps: usize,
}

/// Checks an image name and adds `:latest` when it has neither tag nor
/// digest, as Docker does.
pub fn normalize_name(name: &str) -> Result<String, CatalogError> {
    let bad = |reason| CatalogError::BadName {
        name: name.chars().take(300).collect(),
        reason,
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
    {
        return Err(bad(
            "allowed characters are letters, digits and . _ - / : @",
        ));
    }
    if name.starts_with(['/', ':', '@', '.', '-']) || name.contains("//") {
        return Err(bad("malformed repository path"));
    }
    if name.parse::<Digest>().is_ok() {
        return Err(bad("a digest is not a name"));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        Ok(name.to_owned())
    } else {
        Ok(format!("{name}:latest"))
    }
}

/// The image catalog of a store.
pub struct Catalog<'a> {
    store: &'a Store,
}

type Refs = BTreeMap<String, Digest>;

impl<'a> Catalog<'a> {
    /// The catalog of `store`.
    pub fn new(store: &'a Store) -> Self {
        Catalog { store }
    }

    /// Saves (or replaces) an image record.
    pub fn put(&self, record: &ImageRecord) -> Result<(), CatalogError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| CatalogError::Corrupt {
            path: self.store.record_path(&record.manifest),
            source,
        })?;
        self.store
            .write_atomic(&self.store.record_path(&record.manifest), &bytes)?;
        Ok(())
    }

    /// The record of the image with manifest `digest`, if imported.
    pub fn get(&self, digest: &Digest) -> Result<Option<ImageRecord>, CatalogError> {
        let path = self.store.record_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CatalogError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CatalogError::Corrupt { path, source })
    }

    /// Every imported image's manifest digest.
    pub fn digests(&self) -> Result<Vec<Digest>, CatalogError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.store.root().join("records").join(alg.name());
            for name in list_dir(&dir)? {
                let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if let Ok(d) = format!("{}:{hex}", alg.name()).parse() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolves a name (`busybox`, `busybox:1.36`), a full manifest digest
    /// (`sha256:…`) or an unambiguous digest prefix of at least 12 hex
    /// characters to an imported image.
    pub fn resolve(&self, name_or_digest: &str) -> Result<Digest, CatalogError> {
        let unknown = || CatalogError::Unknown(name_or_digest.chars().take(300).collect());
        if let Ok(d) = name_or_digest.parse::<Digest>() {
            return match self.get(&d)? {
                Some(_) => Ok(d),
                None => Err(unknown()),
            };
        }
        let prefix = name_or_digest
            .strip_prefix("sha256:")
            .unwrap_or(name_or_digest);
        if prefix.len() >= 12
            && prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let hits: Vec<Digest> = self
                .digests()?
                .into_iter()
                .filter(|d| d.hex().starts_with(prefix))
                .collect();
            if let [one] = hits.as_slice() {
                return Ok(one.clone());
            }
        }
        let name = normalize_name(name_or_digest).map_err(|_| unknown())?;
        self.read_refs()?.get(&name).cloned().ok_or_else(unknown)
    }

    /// Points `name` at image `digest` (replacing what it pointed at).
    pub fn tag(&self, name: &str, digest: &Digest) -> Result<String, CatalogError> {
        let name = normalize_name(name)?;
        if self.get(digest)?.is_none() {
            return Err(CatalogError::Unknown(digest.to_string()));
        }
        let _lock = self.store.lock("refs.lock", true)?;
        let mut refs = self.read_refs()?;
        refs.insert(name.clone(), digest.clone());
        self.write_refs(&refs)?;
        Ok(name)
    }

    /// Removes tag `name`. Returns the digest it pointed at.
    pub fn untag(&self, name: &str) -> Result<Digest, CatalogError> {
        let unknown = || CatalogError::Unknown(name.chars().take(300).collect());
        let name = normalize_name(name).map_err(|_| unknown())?;
        let _lock = self.store.lock("refs.lock", true)?;
        let mut refs = self.read_refs()?;
        let digest = refs.remove(&name).ok_or_else(unknown)?;
        self.write_refs(&refs)?;
        Ok(digest)
    }

    /// Names pointing at `digest`.
    pub fn tags_of(&self, digest: &Digest) -> Result<Vec<String>, CatalogError> {
        Ok(self
            .read_refs()?
            .into_iter()
            .filter(|(_, d)| d == digest)
            .map(|(n, _)| n)
            .collect())
    }

    /// All images with their tags, newest name first by name order.
    pub fn list(&self) -> Result<Vec<ImageSummary>, CatalogError> {
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for digest in self.digests()? {
            let Some(record) = self.get(&digest)? else {
                continue;
            };
            out.push(ImageSummary {
                tags: refs
                    .iter()
                    .filter(|(_, d)| **d == digest)
                    .map(|(n, _)| n.clone())
                    .collect(),
                size: record.size(),
                created: record.config.created.clone(),
                digest,
            });
        }
        Ok(out)
    }

    /// Removes an image by name or digest, Docker style: a name is untagged,
    /// and the image itself goes when no name points at it any more; a
    /// digest removes the image and all its names. Blobs and the disk are
    /// reclaimed by [`Catalog::gc`]. Returns the image's digest and whether
    /// the image record was removed.
    pub fn remove(&self, name_or_digest: &str) -> Result<(Digest, bool), CatalogError> {
        let _lock = self.store.lock("refs.lock", true)?;
        let mut refs = self.read_refs()?;
        let tag = normalize_name(name_or_digest)
            .ok()
            .and_then(|n| refs.remove(&n));
        let digest = match tag {
            Some(d) => d,
            None => {
                let d = self.resolve(name_or_digest)?;
                refs.retain(|_, v| *v != d);
                d
            }
        };
        self.write_refs(&refs)?;
        let still_named = refs.values().any(|d| *d == digest);
        if !still_named {
            remove_file_if_exists(&self.store.record_path(&digest))?;
        }
        Ok((digest, !still_named))
    }

    /// Removes images that have no name and are not in `in_use` (images of
    /// existing sandboxes), then every blob and disk that no remaining image
    /// needs, then leftovers of dead processes. `disk_exts` lists the disk
    /// file extensions in use (see disk.rs).
    pub fn gc(
        &self,
        in_use: &HashSet<Digest>,
        disk_exts: &[&str],
    ) -> Result<GcReport, CatalogError> {
        let _gc = self.store.lock("gc.lock", true)?;
        let mut report = GcReport::default();
        let named: HashSet<Digest> = self.read_refs()?.into_values().collect();
        let mut needed_blobs: HashSet<Digest> = HashSet::new();
        let mut kept_images: HashSet<Digest> = HashSet::new();
        for digest in self.digests()? {
            if !named.contains(&digest) && !in_use.contains(&digest) {
                remove_file_if_exists(&self.store.record_path(&digest))?;
                report.images.push(digest);
                continue;
            }
            match self.get(&digest) {
                Ok(Some(record)) => needed_blobs.extend(record.blobs().cloned()),
                Ok(None) => {}
                // A corrupt record keeps nothing alive but is left for a
                // human to look at.
                Err(e) => tracing::warn!(image = %digest, error = %e, "unreadable image record"),
            }
            kept_images.insert(digest);
        }
        for blob in self.store.list_blobs()? {
            if !needed_blobs.contains(&blob) {
                report.bytes += self.store.blob_size(&blob)?.unwrap_or(0);
                self.store.remove_blob(&blob)?;
                report.blobs += 1;
            }
        }
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.store.root().join("disks").join(alg.name());
            for name in list_dir(&dir)? {
                let Some(name) = name.to_str() else { continue };
                let Some((hex, ext)) = name.split_once('.') else {
                    continue;
                };
                let keep = disk_exts.contains(&ext)
                    && format!("{}:{hex}", alg.name())
                        .parse::<Digest>()
                        .is_ok_and(|d| kept_images.contains(&d));
                if !keep {
                    let path = dir.join(name);
                    report.bytes += std::fs::symlink_metadata(&path)
                        .map(|m| m.len())
                        .unwrap_or(0);
                    remove_file_if_exists(&path)?;
                    report.disks += 1;
                }
            }
        }
        report.temps = self.store.clean_stale_temps()?;
        let live: BTreeSet<_> = kept_images.iter().collect();
        tracing::info!(
            kept = live.len(),
            images = report.images.len(),
            blobs = report.blobs,
            disks = report.disks,
            bytes = report.bytes,
            "image garbage collection"
        );
        Ok(report)
    }

    fn read_refs(&self) -> Result<Refs, CatalogError> {
        let path = self.store.refs_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Refs::new()),
            Err(source) => return Err(CatalogError::Read { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| CatalogError::Corrupt { path, source })
    }

    fn write_refs(&self, refs: &Refs) -> Result<(), CatalogError> {
        let path = self.store.refs_path();
        let bytes = serde_json::to_vec_pretty(refs).map_err(|source| CatalogError::Corrupt {
            path: path.clone(),
            source,
        })?;
        self.store.write_atomic(&path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_name("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            normalize_name("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        for bad in ["", "a b", "../x", "/abs", "a//b", "x\n"] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }
}
