//! OCI images: import from layouts and archives, a content-addressed store,
//! unpacking with OCI semantics, one read-only root disk per image, names,
//! and garbage collection.
//!
//! [`Images`] is the entry point the daemon and the shim use; the modules
//! below it each do one job and can be used on their own. Registry pulls
//! ([`Images::pull`]) fetch into the same store through the same checks.
//!
//! ```no_run
//! use std::path::Path;
//! use cocoon_runtime::image::{DiskFormat, Images};
//!
//! # fn main() -> Result<(), cocoon_runtime::image::ImageError> {
//! let images = Images::open(Path::new("/var/lib/cocoon"))?;
//! let imported = images.import_archive(Path::new("alpine.tar"), None, Some("alpine"))?;
//! let disk = images.root_disk("alpine", DiskFormat::DEFAULT)?;
//! println!("{} -> {}", imported.record.manifest, disk.path.display());
//! println!("runs {:?}", imported.record.config.process.args());
//! # Ok(())
//! # }
//! ```

pub mod build;
pub mod busybox;
pub mod catalog;
pub mod config;
pub mod digest;
pub mod disk;
pub mod layout;
pub mod registry;
pub mod store;
pub mod unpack;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use catalog::{GcReport, ImageRecord, ImageSummary};
pub use config::{DefaultProcess, ImageConfig};
pub use digest::Digest;
pub use disk::DiskFormat;
pub use registry::{Credentials, PullEvent, PullOptions, RegistryError};

use catalog::{Catalog, CatalogError};
use disk::DiskError;
use layout::{Imported, LayoutError};
use store::{Store, StoreError};
use unpack::{Rootfs, UnpackError};

/// Errors from image operations; each wraps the failing module's error.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the image source failed or it is not valid.
    #[error(transparent)]
    Import(#[from] LayoutError),
    /// Names, records or garbage collection failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A layer could not be applied.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The disk could not be built.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The built-in image could not be assembled.
    #[error(transparent)]
    Busybox(#[from] busybox::BusyboxError),
    /// The image is used by a sandbox.
    #[error("image {0} is used by a sandbox")]
    InUse(Digest),
    /// A registry pull failed (boxed: it is large and rare).
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// The runtime for a blocking pull could not be created.
    #[error("starting the pull's I/O runtime: {0}")]
    Runtime(std::io::Error),
    /// Writing a temporary layout failed.
    #[error("writing temporary layout {path}: {source}")]
    TempLayout {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<RegistryError> for ImageError {
    fn from(e: RegistryError) -> Self {
        ImageError::Registry(Box::new(e))
    }
}

/// An image after import: its record and the names it now has.
#[derive(Clone, Debug)]
pub struct ImportedImage {
    /// What was imported.
    pub record: ImageRecord,
    /// The names pointing at it after the import.
    pub tags: Vec<String>,
}

/// A root disk ready for a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootDisk {
    /// The image's manifest digest.
    pub image: Digest,
    /// The disk file (read-only, shared by every sandbox of the image).
    pub path: PathBuf,
    /// Its file system.
    pub format: DiskFormat,
    /// False when the disk was already cached.
    pub built: bool,
}

/// The images of one state directory.
#[derive(Clone, Debug)]
pub struct Images {
    store: Store,
}

impl Images {
    /// Opens the image store under `state_dir` (e.g.
    /// [`store::DEFAULT_STATE_DIR`]) and removes what dead processes left.
    pub fn open(state_dir: &Path) -> Result<Images, ImageError> {
        let store = Store::open(state_dir)?;
        store.clean_stale_temps()?;
        Ok(Images { store })
    }

    /// The blob store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalog (records and names).
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog::new(&self.store)
    }

    /// Imports from an OCI layout directory. `reference` selects an image
    /// inside the layout; `tag` names it (default: the names the layout
    /// gives it).
    pub fn import_layout(
        &self,
        dir: &Path,
        reference: Option<&str>,
        tag: Option<&str>,
    ) -> Result<ImportedImage, ImageError> {
        let _gc = self.store.lock("gc.lock", false)?;
        let imported = layout::import_layout(&self.store, dir, reference)?;
        self.finish_import(imported, tag)
    }

    /// Imports from an OCI archive or a `docker save` archive.
    pub fn import_archive(
        &self,
        path: &Path,
        reference: Option<&str>,
        tag: Option<&str>,
    ) -> Result<ImportedImage, ImageError> {
        let _gc = self.store.lock("gc.lock", false)?;
        let imported = layout::import_archive(&self.store, path, reference)?;
        self.finish_import(imported, tag)
    }

    /// Pulls `reference` (`host[:port]/repo[:tag][@digest]`) from its
    /// registry and names it `tag` (default: the reference as given, with
    /// `:latest` added when it has neither tag nor digest). The image is
    /// then used exactly like an imported one. Blobs already stored are not
    /// fetched again; `progress` sees every [`PullEvent`].
    ///
    /// While a garbage collection runs, this waits for it blocking the
    /// calling thread, as imports do.
    pub async fn pull(
        &self,
        reference: &str,
        tag: Option<&str>,
        options: &PullOptions,
        progress: &mut (dyn FnMut(&PullEvent) + Send),
    ) -> Result<ImportedImage, ImageError> {
        let _gc = self.store.lock("gc.lock", false)?;
        let imported = registry::pull(&self.store, reference, options, progress).await?;
        self.finish_import(imported, Some(tag.unwrap_or(reference)))
    }

    /// [`Images::pull`] for callers outside an async runtime (it must not
    /// be called from inside one).
    pub fn pull_blocking(
        &self,
        reference: &str,
        tag: Option<&str>,
        options: &PullOptions,
        progress: &mut (dyn FnMut(&PullEvent) + Send),
    ) -> Result<ImportedImage, ImageError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ImageError::Runtime)?;
        rt.block_on(self.pull(reference, tag, options, progress))
    }

    /// Builds the built-in busybox image from the host's static busybox and
    /// imports it as `busybox:latest`.
    pub fn import_busybox(&self, busybox: &Path) -> Result<ImportedImage, ImageError> {
        let image = busybox::busybox_image(busybox)?;
        let dir = self.store.temp_dir("busybox")?;
        image
            .write_layout(dir.path(), Some(busybox::BUSYBOX_IMAGE))
            .map_err(|source| ImageError::TempLayout {
                path: dir.path().to_owned(),
                source,
            })?;
        self.import_layout(dir.path(), None, Some(busybox::BUSYBOX_IMAGE))
    }

    fn finish_import(
        &self,
        imported: Imported,
        tag: Option<&str>,
    ) -> Result<ImportedImage, ImageError> {
        let catalog = self.catalog();
        catalog.put(&imported.record)?;
        let names: Vec<String> = match tag {
            Some(t) => vec![t.to_owned()],
            None => imported.names,
        };
        let mut tags = Vec::new();
        for name in names {
            match catalog.tag(&name, &imported.record.manifest) {
                Ok(n) => tags.push(n),
                // A name an archive brings may not be one Cocoon accepts;
                // the image is still there by digest. An explicit tag must
                // be valid.
                Err(CatalogError::BadName { .. }) if tag.is_none() => {
                    tracing::warn!(name = %name, "ignoring invalid image name from the source");
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(image = %imported.record.manifest, tags = ?tags, "imported image");
        Ok(ImportedImage {
            record: imported.record,
            tags,
        })
    }

    /// The read-only root disk of an image (by name or digest), built on
    /// first use and cached by manifest digest. Concurrent callers build it
    /// once; a crash mid-build leaves no disk, only a temporary file that
    /// the next [`Images::open`] removes.
    pub fn root_disk(&self, image: &str, format: DiskFormat) -> Result<RootDisk, ImageError> {
        let _gc = self.store.lock("gc.lock", false)?;
        let catalog = self.catalog();
        let digest = catalog.resolve(image)?;
        let path = self.store.disk_path(&digest, format.ext());
        let ready = |built| RootDisk {
            image: digest.clone(),
            path: path.clone(),
            format,
            built,
        };
        if path.exists() {
            return Ok(ready(false));
        }
        let _build = self.store.lock(
            &format!("disk-{}-{}.lock", digest.hex(), format.ext()),
            true,
        )?;
        if path.exists() {
            return Ok(ready(false)); // built by someone else meanwhile
        }
        let record = catalog
            .get(&digest)?
            .ok_or_else(|| CatalogError::Unknown(digest.to_string()))?;
        let started = Instant::now();
        let tree = self.store.temp_dir("rootfs")?;
        // The disk's root directory takes the tree's mode: make it the usual
        // one whatever the umask (a layer's "./" entry may still change it).
        std::fs::set_permissions(
            tree.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(|source| StoreError::Io {
            op: "chmod",
            path: tree.path().to_owned(),
            source,
        })?;
        self.apply_layers(&record, tree.path())?;
        let unpacked = started.elapsed();
        let tmp = self.store.temp_file("disk")?;
        disk::build_root_disk(tree.path(), tmp.path(), format)?;
        // The tool wrote by path: flush what is at that path.
        File::open(tmp.path())
            .and_then(|f| f.sync_all())
            .map_err(|source| StoreError::Io {
                op: "fsync",
                path: tmp.path().to_owned(),
                source,
            })?;
        tmp.set_mode(0o444)?;
        tmp.persist(&path)?;
        tracing::info!(
            image = %digest,
            format = %format,
            unpack_ms = unpacked.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "built root disk"
        );
        Ok(ready(true))
    }

    /// Unpacks an image (by name or digest) into `dest`, an existing empty
    /// directory, checking every layer against its diff ID.
    pub fn unpack(&self, image: &str, dest: &Path) -> Result<ImageRecord, ImageError> {
        let _gc = self.store.lock("gc.lock", false)?;
        let catalog = self.catalog();
        let digest = catalog.resolve(image)?;
        let record = catalog
            .get(&digest)?
            .ok_or_else(|| CatalogError::Unknown(digest.to_string()))?;
        self.apply_layers(&record, dest)?;
        Ok(record)
    }

    fn apply_layers(&self, record: &ImageRecord, dest: &Path) -> Result<(), ImageError> {
        let rootfs = Rootfs::open(dest)?;
        for layer in &record.layers {
            let blob = self.store.open_blob(&layer.digest)?;
            rootfs.apply_layer(&layer.digest, blob, Some(&layer.diff_id))?;
        }
        Ok(())
    }

    /// All images.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        Ok(self.catalog().list()?)
    }

    /// Names an image.
    pub fn tag(&self, image: &str, name: &str) -> Result<String, ImageError> {
        let catalog = self.catalog();
        let digest = catalog.resolve(image)?;
        Ok(catalog.tag(name, &digest)?)
    }

    /// Removes a name, or an image by digest (see [`Catalog::remove`]),
    /// refusing images in `in_use`. Space is reclaimed by [`Images::gc`].
    pub fn remove(&self, image: &str, in_use: &HashSet<Digest>) -> Result<Digest, ImageError> {
        let catalog = self.catalog();
        let digest = catalog.resolve(image)?;
        let tags = catalog.tags_of(&digest)?;
        let by_name = catalog::normalize_name(image).is_ok_and(|n| tags.contains(&n));
        let removes_record = !by_name || tags.len() <= 1;
        if in_use.contains(&digest) && removes_record {
            return Err(ImageError::InUse(digest));
        }
        Ok(catalog.remove(image)?.0)
    }

    /// Removes unnamed images not in `in_use`, and every blob, disk and
    /// temporary file nothing needs.
    pub fn gc(&self, in_use: &HashSet<Digest>) -> Result<GcReport, ImageError> {
        let exts: Vec<&str> = DiskFormat::ALL.iter().map(|f| f.ext()).collect();
        Ok(self.catalog().gc(in_use, &exts)?)
    }
}
