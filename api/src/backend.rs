//! What the REST layer needs from the runtime, as a trait, so the router
//! can be tested without VMs; [`RuntimeBackend`] is the real one on
//! [`SandboxManager`] and the image store.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use cocoon_proto::PathInfo;
use cocoon_runtime::image::{
    busybox, Credentials, DiskFormat, ImageSummary, Images, PullEvent, PullOptions,
};
use cocoon_runtime::sandbox::pool::PoolStats;
use cocoon_runtime::sandbox::{
    ExecOutput, ExecSpec, ExecStreamSpec, Limits, ListFilter, LogStream, OutputChunk, ProcessIo,
    SandboxError, SandboxManager, SandboxRecord, SandboxSpec, SandboxState,
};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::io::StreamReader;

use crate::error::ApiError;
use crate::types::{ImageInfo, ImportRequest, PullProgress, RemovedImage};

/// The bytes of a file or archive read out of a sandbox.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// What to pull (validated by the route).
#[derive(Debug, Clone)]
pub struct PullSpec {
    /// The registry reference.
    pub reference: String,
    /// The name to give the image; default: the reference.
    pub name: Option<String>,
    /// Credentials for the registry.
    pub credentials: Credentials,
}

/// How much of a refused upload's body is read and dropped so that the
/// client gets to read the answer.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Progress of a pull sends a `downloading` line at most every this many
/// bytes of a layer (and at its end).
const PROGRESS_STEP: u64 = 512 << 10;

/// The operations behind the routes.
pub trait Backend: Send + Sync + 'static {
    /// Creates a sandbox and starts it.
    fn create(
        &self,
        spec: SandboxSpec,
    ) -> impl Future<Output = Result<SandboxRecord, SandboxError>> + Send;
    /// Sandboxes matching the filter.
    fn list(&self, filter: &ListFilter) -> Vec<SandboxRecord>;
    /// One sandbox.
    fn get(&self, id: &str) -> Result<SandboxRecord, SandboxError>;
    /// Stops a sandbox: SIGTERM to its init, `grace` (default: the
    /// daemon's) for it to exit, then the VM is killed.
    fn stop(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> impl Future<Output = Result<SandboxRecord, SandboxError>> + Send;
    /// Waits for a sandbox to stop or fail.
    fn wait(&self, id: &str) -> impl Future<Output = Result<SandboxRecord, SandboxError>> + Send;
    /// Deletes a sandbox.
    fn delete(&self, id: &str) -> impl Future<Output = Result<SandboxRecord, SandboxError>> + Send;
    /// Runs a process in a sandbox.
    fn exec(
        &self,
        id: &str,
        spec: ExecSpec,
    ) -> impl Future<Output = Result<ExecOutput, SandboxError>> + Send;
    /// Starts a process with its stdio streamed.
    fn exec_stream(
        &self,
        id: &str,
        spec: ExecStreamSpec,
    ) -> impl Future<Output = Result<ProcessIo, SandboxError>> + Send;
    /// Attaches to the init process (its log from the start with `logs`),
    /// taking its stdin with `stdin`.
    fn attach(
        &self,
        id: &str,
        stdin: bool,
        logs: bool,
    ) -> impl Future<Output = Result<ProcessIo, SandboxError>> + Send;
    /// The init process's output.
    fn logs(
        &self,
        id: &str,
        stream: Option<LogStream>,
    ) -> impl Future<Output = Result<Vec<u8>, SandboxError>> + Send;
    /// The init process's output as it is written, until the sandbox stops.
    fn follow_logs(
        &self,
        id: &str,
        stream: Option<LogStream>,
    ) -> impl Future<Output = Result<mpsc::Receiver<OutputChunk>, SandboxError>> + Send;
    /// Sandboxes per state.
    fn counts(&self) -> BTreeMap<SandboxState, usize>;
    /// The warm pool's counts (none without one).
    fn warm_pool(&self) -> PoolStats {
        PoolStats::default()
    }
    /// Every image.
    fn images(&self) -> impl Future<Output = Result<Vec<ImageInfo>, ApiError>> + Send;
    /// Imports an image (request already validated).
    fn import(
        &self,
        req: ImportRequest,
    ) -> impl Future<Output = Result<ImageInfo, ApiError>> + Send;
    /// Removes an image name (or an image by digest).
    fn remove_image(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<RemovedImage, ApiError>> + Send;
    /// Pulls an image from a registry, reporting progress on `progress`
    /// (it may be closed: the pull goes on).
    fn pull(
        &self,
        spec: PullSpec,
        progress: UnboundedSender<PullProgress>,
    ) -> impl Future<Output = Result<ImageInfo, ApiError>> + Send;
    /// Writes a request body into a running sandbox at `path`: a file
    /// with `mode`, or with `tar` an archive unpacked into the directory
    /// `path`. Returns the bytes received.
    fn put_file(
        &self,
        id: &str,
        path: &str,
        tar: bool,
        mode: u32,
        body: Body,
    ) -> impl Future<Output = Result<u64, SandboxError>> + Send;
    /// What `path` in a running sandbox is.
    fn stat_file(
        &self,
        id: &str,
        path: &str,
    ) -> impl Future<Output = Result<PathInfo, SandboxError>> + Send;
    /// Reads `path` (with `tar`, an archive of it) out of a running
    /// sandbox. Fails before any data when it cannot be read.
    fn get_file(
        &self,
        id: &str,
        path: &str,
        tar: bool,
    ) -> impl Future<Output = Result<ByteStream, SandboxError>> + Send;
    /// The largest sandbox a create may ask for.
    fn limits(&self) -> Limits {
        Limits::default()
    }
}

/// The runtime: a sandbox manager and its image store.
#[derive(Debug, Clone)]
pub struct RuntimeBackend {
    manager: SandboxManager,
    busybox: PathBuf,
    registries: PullOptions,
}

impl RuntimeBackend {
    /// Serves `manager`; the built-in busybox image is built from
    /// `busybox_bin` (a static busybox).
    pub fn new(manager: SandboxManager, busybox_bin: PathBuf) -> Self {
        RuntimeBackend {
            manager,
            busybox: busybox_bin,
            registries: PullOptions::default(),
        }
    }

    /// Pulls use these registry settings (plain-HTTP registries, extra
    /// CA, time limits); their credentials come with each pull.
    pub fn with_registries(mut self, registries: PullOptions) -> Self {
        self.registries = registries;
        self
    }

    /// The default static busybox.
    pub fn default_busybox() -> PathBuf {
        PathBuf::from(busybox::DEFAULT_BUSYBOX)
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::internal(format!("image task failed: {e}")))?
    }
}

fn info(s: ImageSummary) -> ImageInfo {
    ImageInfo {
        digest: s.digest.to_string(),
        tags: s.tags,
        size: s.size,
        created: s.created,
    }
}

/// How the API lists an image just imported or pulled.
fn imported_info(
    images: &Images,
    imported: cocoon_runtime::image::ImportedImage,
) -> Result<ImageInfo, ApiError> {
    let digest = imported.record.manifest.to_string();
    let listed = images
        .list()?
        .into_iter()
        .find(|s| s.digest.to_string() == digest);
    Ok(match listed {
        Some(s) => info(s),
        None => ImageInfo {
            size: imported.record.size(),
            created: imported.record.config.created.clone(),
            tags: imported.tags,
            digest,
        },
    })
}

/// A pull event as a progress line; `downloading` lines are thinned out
/// to one per [`PROGRESS_STEP`] bytes of a layer (`last` holds the layer
/// and bytes of the last one sent).
fn progress_line(ev: &PullEvent, last: &mut (usize, u64)) -> Option<PullProgress> {
    Some(match ev {
        PullEvent::Resolved {
            manifest,
            layers,
            bytes,
        } => PullProgress::Resolved {
            digest: manifest.to_string(),
            layers: *layers,
            bytes: *bytes,
        },
        PullEvent::Layer {
            index,
            digest,
            done,
            total,
        } => {
            let soon = last.0 == *index && *done < last.1.saturating_add(PROGRESS_STEP);
            if soon && done < total {
                return None;
            }
            *last = (*index, *done);
            PullProgress::Downloading {
                layer: *index,
                digest: digest.to_string(),
                current: *done,
                total: *total,
            }
        }
        PullEvent::LayerDone {
            index,
            digest,
            total,
            cached,
        } => PullProgress::LayerDone {
            layer: *index,
            digest: digest.to_string(),
            total: *total,
            cached: *cached,
        },
    })
}

impl Backend for RuntimeBackend {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        self.manager.create(spec).await
    }
    fn list(&self, filter: &ListFilter) -> Vec<SandboxRecord> {
        self.manager.list(filter)
    }
    fn limits(&self) -> Limits {
        self.manager.config().limits
    }
    fn get(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.manager.get(id)
    }
    async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<SandboxRecord, SandboxError> {
        self.manager.stop(id, grace).await
    }
    async fn wait(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.manager.wait(id).await
    }
    async fn delete(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.manager.delete(id).await
    }
    async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecOutput, SandboxError> {
        self.manager.exec(id, spec).await
    }
    async fn exec_stream(&self, id: &str, spec: ExecStreamSpec) -> Result<ProcessIo, SandboxError> {
        self.manager.exec_stream(id, spec).await
    }
    async fn attach(&self, id: &str, stdin: bool, logs: bool) -> Result<ProcessIo, SandboxError> {
        self.manager.attach(id, stdin, logs).await
    }
    async fn logs(&self, id: &str, stream: Option<LogStream>) -> Result<Vec<u8>, SandboxError> {
        self.manager.logs(id, stream).await
    }
    async fn follow_logs(
        &self,
        id: &str,
        stream: Option<LogStream>,
    ) -> Result<mpsc::Receiver<OutputChunk>, SandboxError> {
        self.manager.follow_logs(id, stream).await
    }
    fn counts(&self) -> BTreeMap<SandboxState, usize> {
        self.manager.counts()
    }
    fn warm_pool(&self) -> PoolStats {
        self.manager.warm_pool()
    }
    async fn images(&self) -> Result<Vec<ImageInfo>, ApiError> {
        let images = self.manager.images().clone();
        Self::blocking(move || Ok(images.list()?.into_iter().map(info).collect())).await
    }
    async fn import(&self, req: ImportRequest) -> Result<ImageInfo, ApiError> {
        let images = self.manager.images().clone();
        let busybox = self.busybox.clone();
        Self::blocking(move || {
            let imported = match (&req.archive, &req.builtin) {
                (Some(path), None) => {
                    let path = Path::new(path);
                    if path.is_dir() {
                        images.import_layout(path, req.reference.as_deref(), req.name.as_deref())?
                    } else {
                        images.import_archive(
                            path,
                            req.reference.as_deref(),
                            req.name.as_deref(),
                        )?
                    }
                }
                (None, Some(_)) => {
                    let imported = images.import_busybox(&busybox)?;
                    if let Some(name) = &req.name {
                        images.tag(&imported.record.manifest.to_string(), name)?;
                    }
                    imported
                }
                _ => return Err(ApiError::invalid("give exactly one of archive and builtin")),
            };
            imported_info(&images, imported)
        })
        .await
    }
    async fn remove_image(&self, name: &str) -> Result<RemovedImage, ApiError> {
        let images = self.manager.images().clone();
        let in_use = self.manager.images_in_use();
        let name = name.to_string();
        let (removed, disk) = Self::blocking(move || {
            let digest = images.remove(&name, &in_use)?;
            if let Err(e) = images.gc(&in_use) {
                tracing::warn!("image garbage collection: {e}");
            }
            let disk = images.store().disk_path(&digest, DiskFormat::Erofs.ext());
            Ok((
                RemovedImage {
                    digest: digest.to_string(),
                },
                disk,
            ))
        })
        .await?;
        // Warm VMs of an image whose disk is gone would hold it until the
        // pool changes shape.
        if !disk.exists() {
            self.manager.forget_warm_disk(&disk).await;
        }
        Ok(removed)
    }
    async fn pull(
        &self,
        spec: PullSpec,
        progress: UnboundedSender<PullProgress>,
    ) -> Result<ImageInfo, ApiError> {
        let images = self.manager.images().clone();
        let mut options = self.registries.clone();
        options.credentials = spec.credentials;
        Self::blocking(move || {
            let mut last = (usize::MAX, 0);
            let mut report = |ev: &PullEvent| {
                if let Some(line) = progress_line(ev, &mut last) {
                    let _ = progress.send(line);
                }
            };
            let imported = images.pull_blocking(
                &spec.reference,
                spec.name.as_deref(),
                &options,
                &mut report,
            )?;
            imported_info(&images, imported)
        })
        .await
    }
    async fn put_file(
        &self,
        id: &str,
        path: &str,
        tar: bool,
        mode: u32,
        body: Body,
    ) -> Result<u64, SandboxError> {
        let data = body
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other));
        let mut reader = StreamReader::new(data);
        let r = self.manager.copy_in(id, path, tar, mode, &mut reader).await;
        if r.is_err() {
            // Read (and drop) what the client still sends, up to a limit,
            // so that it sees the error answer instead of a connection
            // closed while it writes.
            let mut rest = tokio::io::AsyncReadExt::take(&mut reader, DRAIN_LIMIT);
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        }
        r
    }
    async fn stat_file(&self, id: &str, path: &str) -> Result<PathInfo, SandboxError> {
        self.manager.stat(id, path).await
    }
    async fn get_file(&self, id: &str, path: &str, tar: bool) -> Result<ByteStream, SandboxError> {
        let (first, rest) = self.manager.copy_out(id, path, tar).await?;
        let first = stream::iter(first.map(Ok));
        let rest = stream::unfold(Some(rest), |s| async move {
            let mut s = s?;
            match s.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(s))),
                Ok(None) => None,
                // The error ends the body: the client sees a cut transfer.
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        });
        Ok(first.chain(rest).boxed())
    }
}
