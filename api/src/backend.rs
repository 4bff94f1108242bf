//! What the REST layer needs from the runtime, as a trait, so the router
//! can be tested without VMs; [`RuntimeBackend`] is the real one on
//! [`SandboxManager`] and the image store.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use cocoon_runtime::image::{busybox, ImageSummary};
use cocoon_runtime::sandbox::{
    ExecOutput, ExecSpec, ExecStreamSpec, ListFilter, LogStream, OutputChunk, ProcessIo,
    SandboxError, SandboxManager, SandboxRecord, SandboxSpec, SandboxState,
};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::types::{ImageInfo, ImportRequest, RemovedImage};

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
    /// Stops a sandbox.
    fn stop(&self, id: &str) -> impl Future<Output = Result<SandboxRecord, SandboxError>> + Send;
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
}

/// The runtime: a sandbox manager and its image store.
#[derive(Debug, Clone)]
pub struct RuntimeBackend {
    manager: SandboxManager,
    busybox: PathBuf,
}

impl RuntimeBackend {
    /// Serves `manager`; the built-in busybox image is built from
    /// `busybox_bin` (a static busybox).
    pub fn new(manager: SandboxManager, busybox_bin: PathBuf) -> Self {
        RuntimeBackend {
            manager,
            busybox: busybox_bin,
        }
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

impl Backend for RuntimeBackend {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        self.manager.create(spec).await
    }
    fn list(&self, filter: &ListFilter) -> Vec<SandboxRecord> {
        self.manager.list(filter)
    }
    fn get(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.manager.get(id)
    }
    async fn stop(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        self.manager.stop(id).await
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
        })
        .await
    }
    async fn remove_image(&self, name: &str) -> Result<RemovedImage, ApiError> {
        let images = self.manager.images().clone();
        let in_use = self.manager.images_in_use();
        let name = name.to_string();
        Self::blocking(move || {
            let digest = images.remove(&name, &in_use)?;
            if let Err(e) = images.gc(&in_use) {
                tracing::warn!("image garbage collection: {e}");
            }
            Ok(RemovedImage {
                digest: digest.to_string(),
            })
        })
        .await
    }
}
