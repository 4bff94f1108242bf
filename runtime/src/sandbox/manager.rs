//! [`SandboxManager`]: creates, tracks, stops and deletes sandboxes, and
//! keeps their records in the state database so that a restarted daemon
//! finds them again.
//!
//! Each sandbox has a slot: its record (the truth the API shows), a lock
//! that serialises lifecycle changes (create, stop, fail, delete), and
//! while it runs the agent connection and the VMM process. A monitor task
//! per running sandbox turns the init process's exit, the VMM's death or
//! the sandbox's timeout into a state change.
//!
//! Files of sandbox `ID` live in `<state>/sandboxes/ID/`: `scratch.ext4`
//! (the writable layer), `vsock.sock` (the VMM's hybrid vsock socket),
//! `vmm.log` (the VMM's messages and the guest console) and `init.log`
//! (the init process's output, see [`logs`](super::logs)). The scratch disk
//! and socket are removed when the sandbox stops or fails; the logs stay
//! until it is deleted.
//!
//! A sandbox with `network: default` is given its address when its record
//! is made (so a record is the allocation, and a restarted daemon rebuilds
//! the allocator from the records), its namespace, veth pair and TAP just
//! before its VMM starts, and gives all of them back whenever its VM is
//! gone: stop, failure of any kind, delete, or a daemon start that finds
//! its VMM dead ([`crate::network`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::future::pending;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cocoon_proto::{ErrorCode, Process, Rootfs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::db::{Db, DbError};
use super::files::{self, FileError, FileErrorKind};
use super::logs::{self, read_log, LogReader, LogStream, LogWriter};
use super::pool::{Pool as WarmPool, PoolStats, WarmKey};
use super::record::{now_rfc3339, ExitInfo, SandboxRecord, SandboxState, VmmIdentity};
use super::spec::{
    exec_process, resolve_process, ExecSpec, ExecStreamSpec, Limits, Network, SandboxSpec,
    SpecError,
};
use super::stream::{self, OutputChunk, ProcessIo};
use super::vmm::{kill_identity, Launch, VmmPaths, VmmProcess};
use crate::agent::{
    self, AgentClient, ContainerSetup, InputStream, OutputStream, Stdio, AGENT_VSOCK_PORT,
};
use crate::image::catalog::CatalogError;
use crate::image::disk::{self, DiskError};
use crate::image::{DiskFormat, ImageError, Images};
use crate::network::{self, HostNetwork, NetError, Pool};

/// The container id every sandbox uses inside its VM.
pub const CONTAINER_ID: &str = "main";
/// The exec id of a sandbox's init process.
pub const INIT_EXEC_ID: &str = "init";
/// Most bytes of stdout (and of stderr) an exec returns.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// A Unix socket path must fit `sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long connecting to an agent found after a restart may take.
const REATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the init's output may keep arriving after it exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed VMM may take to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The signal a stop sends the init first.
const SIGTERM: i32 = 15;

/// How the manager is set up.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Holds the image store, the database and the sandboxes' files.
    pub state_dir: PathBuf,
    /// The VMM, kernel and initramfs to boot sandboxes with.
    pub vmm: VmmPaths,
    /// Longest wait from starting the VMM to reaching the agent.
    pub boot_timeout: Duration,
    /// Default grace a stop gives the init after SIGTERM before the VM is
    /// killed (Docker's `stop -t`).
    pub stop_timeout: Duration,
    /// Where `network: default` sandboxes take their /30 subnets from.
    pub network_pool: Pool,
    /// The largest sandbox a create may ask for.
    pub limits: Limits,
    /// How many VMs to keep booted ahead of demand in the shape of the last
    /// `network: none` sandbox created (0: none; see [`super::pool`]).
    pub warm_pool: usize,
    /// Networked sandboxes' NICs move frames with the host kernel's
    /// vhost-net instead of the VMM's event loop.
    pub vhost_net: bool,
}

impl ManagerConfig {
    /// A configuration with the usual time limits (60 s boot, 10 s stop),
    /// the default network pool (`10.200.0.0/16`) and the absolute size limits.
    pub fn new(state_dir: PathBuf, vmm: VmmPaths) -> Self {
        ManagerConfig {
            state_dir,
            vmm,
            boot_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            network_pool: Pool::DEFAULT,
            limits: Limits::default(),
            warm_pool: 0,
            vhost_net: false,
        }
    }
}

/// Errors of sandbox operations.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The request is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// No sandbox has this id.
    #[error("no sandbox {0:?}")]
    NotFound(String),
    /// No image has this name or digest.
    #[error("no image {0:?}")]
    ImageNotFound(String),
    /// The sandbox is not in a state that allows the operation.
    #[error("sandbox {id} is {state}: cannot {op}")]
    WrongState {
        /// The sandbox.
        id: String,
        /// Its state.
        state: SandboxState,
        /// What was asked.
        op: &'static str,
    },
    /// The agent refused the process (program not found, bad directory,
    /// permission denied).
    #[error("{message}")]
    ProcessRejected {
        /// The sandbox a refused init process left in state `failed` (to
        /// be deleted); `None` for a refused exec.
        failed_sandbox: Option<String>,
        /// The program does not exist in the sandbox.
        executable_not_found: bool,
        /// The agent's message.
        message: String,
    },
    /// The sandbox could not be started; it is left in state `failed`.
    #[error("sandbox {id} failed to start: {reason}")]
    CreateFailed {
        /// The sandbox.
        id: String,
        /// Why.
        reason: String,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(ImageError),
    /// The agent call failed.
    #[error("agent: {0}")]
    Agent(#[from] agent::Error),
    /// The state database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A disk could not be made.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A copy into or out of the sandbox was refused.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory's path is too long for the sockets under it.
    #[error("state directory {0} is too long for the Unix sockets under it")]
    StateDirTooLong(PathBuf),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The sandbox's network could not be given or taken back.
    #[error("network: {0}")]
    Network(#[from] NetError),
}

/// Broad classes of [`SandboxError`], for callers that map them (to HTTP
/// statuses, to shim errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is wrong.
    Invalid,
    /// What the caller named does not exist.
    NotFound,
    /// The sandbox's state does not allow it.
    Conflict,
    /// Cocoon failed.
    Internal,
}

impl SandboxError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::InvalidSpec(_) | SandboxError::ProcessRejected { .. } => {
                ErrorKind::Invalid
            }
            SandboxError::NotFound(_) | SandboxError::ImageNotFound(_) => ErrorKind::NotFound,
            SandboxError::File(f) => match f.kind {
                FileErrorKind::NotFound => ErrorKind::NotFound,
                FileErrorKind::PermissionDenied | FileErrorKind::Invalid => ErrorKind::Invalid,
            },
            SandboxError::WrongState { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Internal,
        }
    }
}

impl From<ImageError> for SandboxError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Catalog(CatalogError::Unknown(name)) => SandboxError::ImageNotFound(name),
            e => SandboxError::Image(e),
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_owned();
    move |source| SandboxError::Io { op, path, source }
}

/// Which sandboxes [`SandboxManager::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only in this state.
    pub state: Option<SandboxState>,
    /// Only with all these labels (key, value).
    pub labels: Vec<(String, String)>,
}

/// What a process run by [`SandboxManager::exec`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    /// Its stdout (invalid UTF-8 replaced), at most [`MAX_EXEC_OUTPUT`]
    /// bytes.
    pub stdout: String,
    /// Its stderr, likewise.
    pub stderr: String,
    /// How it ended.
    #[serde(flatten)]
    pub exit: ExitInfo,
    /// Output past [`MAX_EXEC_OUTPUT`] was dropped.
    pub truncated: bool,
    /// It was killed because `timeout_s` passed.
    pub timed_out: bool,
}

/// The sandboxes of one state directory.
#[derive(Clone, Debug)]
pub struct SandboxManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ManagerConfig,
    images: Images,
    db: Db,
    net: HostNetwork,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    exec_seq: AtomicU64,
    pool: WarmPool<WarmVm>,
    /// Held (shared) by a filler from before it starts a warm VMM until
    /// that VMM's `vmm.json` is written; closing the pool takes it
    /// exclusively, so no warm VMM it cannot find is started after.
    warm_gate: tokio::sync::RwLock<()>,
}

/// A VM of the warm pool: booted, agent connected, its container created
/// for the sandbox id it will be taken by, no init yet. Its files are in `<state>/warm/ID/` (with `vmm.json`, its identity, so that
/// a daemon start can kill it after a crash) until a sandbox takes it.
#[derive(Debug)]
struct WarmVm {
    /// The id of the sandbox that will take it (its container is named so).
    id: String,
    dir: PathBuf,
    vmm: VmmProcess,
    client: AgentClient,
}

#[derive(Debug)]
struct Slot {
    id: String,
    dir: PathBuf,
    record: Mutex<SandboxRecord>,
    state: watch::Sender<SandboxState>,
    /// Serialises lifecycle changes of this sandbox.
    op: tokio::sync::Mutex<()>,
    live: Mutex<Option<Live>>,
    /// Marked changed after each append to `init.log`, for followers.
    log_appended: watch::Sender<()>,
    /// The init's stdin (`stdin: true`) until an attach takes it.
    init_stdin: Mutex<Option<InputStream>>,
    /// The init's exit once the monitor saw it (and its output was drained),
    /// for a stop waiting out its grace period.
    init_exit: watch::Sender<Option<ExitInfo>>,
    /// Set by a delete: a stop waiting out its grace kills at once.
    hurry: watch::Sender<bool>,
}

/// A running sandbox's connections.
#[derive(Debug, Clone)]
struct Live {
    client: AgentClient,
    vmm: VmmProcess,
}

/// Why a running sandbox stops.
enum Ending {
    /// The monitor saw the init exit: nothing is left to wait for.
    InitExited(ExitInfo),
    /// `timeout_s` passed: a stop with the default grace.
    Timeout,
    /// A client asked for a stop with this grace.
    Requested(Duration),
    /// A delete: no grace, the workload is thrown away (`docker rm -f`).
    Deleted,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    fn new(dir: PathBuf, record: SandboxRecord) -> Arc<Slot> {
        let (state, _) = watch::channel(record.state);
        Arc::new(Slot {
            id: record.id.clone(),
            dir,
            record: Mutex::new(record),
            state,
            op: tokio::sync::Mutex::new(()),
            live: Mutex::new(None),
            log_appended: watch::channel(()).0,
            init_stdin: Mutex::new(None),
            init_exit: watch::channel(None).0,
            hurry: watch::channel(false).0,
        })
    }

    fn record(&self) -> SandboxRecord {
        lock(&self.record).clone()
    }

    fn state(&self) -> SandboxState {
        lock(&self.record).state
    }

    fn live(&self) -> Option<Live> {
        lock(&self.live).clone()
    }

    /// Takes the running VM's connections (and the init's stdin with them).
    fn take_live(&self) -> Option<Live> {
        lock(&self.init_stdin).take();
        lock(&self.live).take()
    }

    fn scratch(&self) -> PathBuf {
        self.dir.join("scratch.ext4")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }
    fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    fn init_log(&self) -> PathBuf {
        self.dir.join("init.log")
    }
}

impl SandboxManager {
    /// Opens the state directory: the image store, the database, and every
    /// sandbox in it. Running sandboxes whose VMM is alive and whose agent
    /// answers are taken over; the others are marked failed and their
    /// files released. Needs a tokio runtime.
    pub async fn open(cfg: ManagerConfig) -> Result<SandboxManager, SandboxError> {
        let sandboxes = cfg.state_dir.join("sandboxes");
        // "<sandboxes>/<12 hex>/vsock.sock"
        if sandboxes.as_os_str().len() + 1 + 12 + 1 + "vsock.sock".len() > MAX_SOCKET_PATH {
            return Err(SandboxError::StateDirTooLong(cfg.state_dir.clone()));
        }
        fs::create_dir_all(&sandboxes).map_err(io_err("create directory", &sandboxes))?;
        for d in [&cfg.state_dir, &sandboxes] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", d))?;
        }
        let images = Images::open(&cfg.state_dir)?;
        // The database is locked: from here on no other daemon uses this
        // state directory, so the warm VMs found are a dead daemon's.
        let db = Db::open(&cfg.state_dir.join("sandboxes.redb"))?;
        let warm = cfg.state_dir.join("warm");
        remove_warm_leftovers(&warm);
        fs::create_dir_all(&warm).map_err(io_err("create directory", &warm))?;
        let records = db.all()?;
        let net = HostNetwork::new(cfg.network_pool);
        // Every recorded allocation is taken before anything new can be
        // allocated (reattaching releases those of dead sandboxes).
        for r in &records {
            if let Some(n) = &r.network {
                if !net.reserve(n) {
                    tracing::error!(id = %r.id, ip = %n.ip, "two sandbox records hold the same subnet");
                }
            }
        }
        let inner = Arc::new(Inner {
            pool: WarmPool::new(cfg.warm_pool),
            warm_gate: tokio::sync::RwLock::new(()),
            cfg,
            images,
            db,
            net,
            slots: Mutex::new(HashMap::new()),
            exec_seq: AtomicU64::new(unix_now().wrapping_mul(1000)),
        });
        let mut known = HashSet::new();
        for record in records {
            known.insert(record.id.clone());
            inner.reattach(record).await;
        }
        inner.remove_unknown_dirs(&sandboxes, &known);
        // Running networked sandboxes depend on the host's firewall and
        // forwarding: put them back should they have been lost (a firewall
        // reload that flushed every table).
        let networked = lock(&inner.slots)
            .values()
            .any(|s| s.state() == SandboxState::Running && s.record().network.is_some());
        if networked {
            if let Err(e) = inner.net.prepare_host().await {
                tracing::error!("preparing the host's network: {e}");
            }
        }
        Ok(SandboxManager { inner })
    }

    /// The image store of the same state directory.
    pub fn images(&self) -> &Images {
        &self.inner.images
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// The warm pool's counts.
    pub fn warm_pool(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Kills the warm VMs booted from `root_disk` (its image was removed;
    /// they would hold the deleted disk until the pool changes shape).
    pub async fn forget_warm_disk(&self, root_disk: &Path) {
        let vms = self.inner.pool.forget(|k| k.root_disk == root_disk);
        futures_util::future::join_all(vms.into_iter().map(discard_warm)).await;
    }

    /// Kills the warm pool's VMs and keeps none from now on (the daemon
    /// stops; sandboxes keep running).
    pub async fn close_warm_pool(&self) {
        let vms = self.inner.pool.close();
        futures_util::future::join_all(vms.into_iter().map(discard_warm)).await;
        // Those still booting: every one started has its vmm.json by now.
        let _gate = self.inner.warm_gate.write().await;
        remove_warm_leftovers(&self.inner.cfg.state_dir.join("warm"));
    }

    /// Creates a sandbox and starts its init process; returns once it runs
    /// (state `running`) or failed ([`SandboxError::CreateFailed`], the
    /// sandbox is kept in state `failed` with the reason).
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        tracing::debug!(image = %spec.image, "create");
        spec.validate()?;
        self.inner.cfg.limits.check(&spec)?;
        let images = self.inner.images.clone();
        let image = spec.image.clone();
        let (root_disk, record) = tokio::task::spawn_blocking(move || {
            let disk = images.root_disk(&image, DiskFormat::Erofs)?;
            let record = images
                .catalog()
                .get(&disk.image)
                .map_err(ImageError::from)?
                .ok_or_else(|| SandboxError::ImageNotFound(image.clone()))?;
            Ok::<_, SandboxError>((disk, record))
        })
        .await
        .map_err(|e| SandboxError::Task(e.to_string()))??;
        let process = resolve_process(&record.config.process, &spec)?;
        let warm = match warm_key(&root_disk.path, &spec) {
            Some(key) if self.inner.pool.enabled() => {
                let vm = self.inner.take_warm(&key);
                self.inner.pool.count(vm.is_some());
                vm
            }
            _ => None,
        };
        let digest = root_disk.image.to_string();
        let (slot, warm) = match warm {
            Some(vm) => {
                match self
                    .inner
                    .new_slot(&spec, &digest, process.clone(), Some(vm.id.clone()))
                {
                    Ok(slot) => (slot, Some(vm)),
                    Err(e) => {
                        // Its id is taken (or the record could not be made):
                        // boot one of our own.
                        tracing::warn!("using a warm VM: {e}");
                        tokio::spawn(discard_warm(vm));
                        (self.inner.new_slot(&spec, &digest, process, None)?, None)
                    }
                }
            }
            None => (self.inner.new_slot(&spec, &digest, process, None)?, None),
        };
        let span = tracing::info_span!("sandbox", id = %slot.id);
        span.in_scope(|| tracing::debug!("record made"));
        // Its own task: a client that goes away mid-create must not leave
        // a VMM nobody watches.
        tokio::spawn(
            self.inner
                .clone()
                .start(slot, root_disk.path, spec, warm)
                .instrument(span),
        )
        .await
        .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// Every sandbox matching `filter`, oldest first.
    pub fn list(&self, filter: &ListFilter) -> Vec<SandboxRecord> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        let mut out: Vec<SandboxRecord> = slots
            .iter()
            .map(|s| s.record())
            .filter(|r| filter.state.is_none_or(|st| r.state == st))
            .filter(|r| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| r.spec.labels.get(k) == Some(v))
            })
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }

    /// One sandbox.
    pub fn get(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        Ok(self.inner.slot(id)?.record())
    }

    /// Number of sandboxes in each state.
    pub fn counts(&self) -> BTreeMap<SandboxState, usize> {
        let mut out = BTreeMap::new();
        for s in lock(&self.inner.slots).values() {
            *out.entry(s.state()).or_insert(0) += 1;
        }
        out
    }

    /// How many `network: default` subnets are allocated.
    pub fn network_allocations(&self) -> usize {
        self.inner.net.in_use()
    }

    /// Image digests some sandbox uses (not to be removed).
    pub fn images_in_use(&self) -> HashSet<crate::image::Digest> {
        lock(&self.inner.slots)
            .values()
            .filter_map(|s| s.record().image_digest.parse().ok())
            .collect()
    }

    /// Stops a running sandbox as `docker stop` does: SIGTERM to the init,
    /// then, once it exited or `grace` (default: the configured stop
    /// timeout) passed, the VM is killed; its scratch disk and socket are
    /// removed. Stopping a stopped or failed sandbox returns it as it is.
    pub async fn stop(
        &self,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<SandboxRecord, SandboxError> {
        let slot = self.inner.slot(id)?;
        let span = tracing::info_span!("sandbox", id = %slot.id);
        let grace = grace.unwrap_or(self.inner.cfg.stop_timeout);
        // Its own task: a client that goes away mid-stop (the grace can be
        // long) must not leave a half-stopped sandbox.
        let inner = self.inner.clone();
        tokio::spawn(
            async move { inner.stop_slot(&slot, Ending::Requested(grace), None).await }
                .instrument(span),
        )
        .await
        .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// Waits until the sandbox has stopped or failed and returns it.
    pub async fn wait(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        let slot = self.inner.slot(id)?;
        let mut rx = slot.state.subscribe();
        // An error means the slot was dropped: the sandbox was deleted.
        let _ = rx.wait_for(|s| s.is_final()).await;
        Ok(slot.record())
    }

    /// Deletes a sandbox: stops it if it runs, removes its record and every
    /// file. Returns its last record, in state `deleted`.
    pub async fn delete(&self, id: &str) -> Result<SandboxRecord, SandboxError> {
        let slot = self.inner.slot(id)?;
        let span = tracing::info_span!("sandbox", id = %slot.id);
        // A stop waiting out its grace gives up now (`docker rm -f`).
        slot.hurry.send_replace(true);
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.delete_slot(&slot).await }.instrument(span))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// The init process's output (`stream` selects one; both interleaved
    /// when `None`).
    pub async fn logs(&self, id: &str, stream: Option<LogStream>) -> Result<Vec<u8>, SandboxError> {
        let slot = self.inner.slot(id)?;
        let path = slot.init_log();
        tokio::task::spawn_blocking(move || read_log(&path, stream).map_err(io_err("read", &path)))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    /// Runs a process in a running sandbox and returns its output and exit.
    pub async fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecOutput, SandboxError> {
        spec.validate()?;
        let slot = self.inner.slot(id)?;
        let Some(live) = slot.live() else {
            return Err(SandboxError::WrongState {
                id: id.to_string(),
                state: slot.state(),
                op: "exec",
            });
        };
        let process = exec_process(&slot.record().process, &spec)?;
        let exec_id = format!("x{}", self.inner.exec_seq.fetch_add(1, Ordering::Relaxed));
        let span = tracing::info_span!("sandbox", id = %slot.id, exec = %exec_id);
        run_exec(&live.client, &exec_id, process, &spec)
            .instrument(span)
            .await
    }

    /// Starts a process in a running sandbox with its stdio streamed (see
    /// [`ProcessIo`]); returns once it runs.
    pub async fn exec_stream(
        &self,
        id: &str,
        spec: ExecStreamSpec,
    ) -> Result<ProcessIo, SandboxError> {
        spec.validate()?;
        let slot = self.inner.slot(id)?;
        let live = slot.live().ok_or_else(|| SandboxError::WrongState {
            id: id.to_string(),
            state: slot.state(),
            op: "exec",
        })?;
        let mut process = exec_process(&slot.record().process, &spec.as_exec())?;
        process.terminal = spec.tty;
        process.console_size = spec.size;
        let stdio = Stdio {
            stdin: spec.stdin,
            stdout: true,
            stderr: !spec.tty,
            keep_output: false,
        };
        let exec_id = format!("x{}", self.inner.exec_seq.fetch_add(1, Ordering::Relaxed));
        let span = tracing::info_span!("sandbox", id = %slot.id, exec = %exec_id);
        let handle = live
            .client
            .exec(CONTAINER_ID, &exec_id, process, stdio)
            .instrument(span.clone())
            .await
            .map_err(exec_refused)?;
        let (io, ends) = stream::channels(spec.stdin);
        span.in_scope(|| stream::drive_exec(live.client, handle, ends));
        Ok(io)
    }

    /// Attaches to a sandbox's init process: its output from the log (all
    /// of it with `logs`, else from now on) until the sandbox stops, then
    /// its exit; resize and signal requests go to it; with `stdin`, the
    /// init's stdin (the sandbox must have been created with `stdin`, and
    /// only one attach can hold it; closing it is final). A sandbox that
    /// has already stopped gives its log and exit at once (and takes no
    /// input).
    pub async fn attach(
        &self,
        id: &str,
        stdin: bool,
        logs: bool,
    ) -> Result<ProcessIo, SandboxError> {
        let slot = self.inner.slot(id)?;
        let (io, ends) = stream::channels(stdin);
        let output = self.follow(&slot, None, !logs, ends.output).await?;
        let span = tracing::info_span!("sandbox", id = %slot.id, attach = true);
        if let Some(rx) = ends.stdin {
            let held = lock(&slot.init_stdin).take();
            match held {
                Some(s) => span.in_scope(|| stream::spawn_stdin(rx, s)),
                // Too late to write to it: the init is gone.
                None if slot.state() != SandboxState::Running => drop(rx),
                None => {
                    output.abort();
                    return Err(SpecError::Invalid {
                        field: "stdin",
                        reason: "the sandbox's init has no stdin to attach: it was not \
                                 created with stdin, or another attach holds it"
                            .into(),
                    }
                    .into());
                }
            }
        }
        let mut control = ends.control;
        let exit = ends.exit;
        let s = slot.clone();
        tokio::spawn(
            async move {
                while let Some(c) = control.recv().await {
                    if let Some(live) = s.live() {
                        stream::apply_control(&live.client, INIT_EXEC_ID, c).await;
                    }
                }
            }
            .instrument(span.clone()),
        );
        tokio::spawn(
            async move {
                let _ = output.await;
                let r = slot.record();
                let _ = exit.send(match (r.exit, r.reason) {
                    (Some(e), _) => Ok(e),
                    (None, reason) => Err(format!(
                        "sandbox {} is {}{}",
                        r.id,
                        r.state,
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    )),
                });
            }
            .instrument(span),
        );
        Ok(io)
    }

    /// The init's output (`stream` selects one) from the start of the log
    /// and then as it is written, until the sandbox has stopped.
    pub async fn follow_logs(
        &self,
        id: &str,
        stream: Option<LogStream>,
    ) -> Result<mpsc::Receiver<OutputChunk>, SandboxError> {
        let slot = self.inner.slot(id)?;
        let (tx, rx) = mpsc::channel(stream::OUTPUT_QUEUE);
        self.follow(&slot, stream, false, tx).await?;
        Ok(rx)
    }

    /// Starts a task copying the slot's log into `tx` (see
    /// [`stream::follow_log`]).
    async fn follow(
        &self,
        slot: &Arc<Slot>,
        want: Option<LogStream>,
        from_end: bool,
        tx: mpsc::Sender<OutputChunk>,
    ) -> Result<JoinHandle<()>, SandboxError> {
        // Subscribe before opening: an append in between is not missed.
        let appended = slot.log_appended.subscribe();
        let state = slot.state.subscribe();
        let path = slot.init_log();
        let reader = tokio::task::spawn_blocking(move || {
            LogReader::open(&path, want, !from_end).map_err(io_err("read", &path))
        })
        .await
        .map_err(|e| SandboxError::Task(e.to_string()))??;
        let span = tracing::info_span!("sandbox", id = %slot.id);
        Ok(tokio::spawn(
            stream::follow_log(reader, tx, appended, state).instrument(span),
        ))
    }

    /// Writes what `source` yields into the running sandbox at `path`: a
    /// file (created or truncated, with `mode`), or with `tar` an archive
    /// unpacked into the directory `path`. Returns the bytes received.
    pub async fn copy_in<R>(
        &self,
        id: &str,
        path: &str,
        tar: bool,
        mode: u32,
        source: R,
    ) -> Result<u64, SandboxError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        files::check_path(path)?;
        let live = self.inner.live(id, "copy files")?;
        live.client
            .copy_in(CONTAINER_ID, path, tar, mode & 0o7777, source)
            .await
            .map_err(file_err)
    }

    /// What `path` in the running sandbox is (a final symlink is not
    /// followed).
    pub async fn stat(&self, id: &str, path: &str) -> Result<cocoon_proto::PathInfo, SandboxError> {
        files::check_path(path)?;
        let live = self.inner.live(id, "copy files")?;
        live.client.stat(CONTAINER_ID, path).await.map_err(file_err)
    }

    /// Reads `path` (with `tar`, an archive of the file or directory tree,
    /// named by its last component) out of the running sandbox. A path
    /// that cannot be read fails here, before any data; errors later in
    /// the stream end it.
    pub async fn copy_out(
        &self,
        id: &str,
        path: &str,
        tar: bool,
    ) -> Result<(Option<bytes::Bytes>, OutputStream), SandboxError> {
        files::check_path(path)?;
        let live = self.inner.live(id, "copy files")?;
        let mut stream = live
            .client
            .copy_out(CONTAINER_ID, path, tar)
            .await
            .map_err(file_err)?;
        let first = stream.next_chunk().await.map_err(file_err)?;
        Ok((first, stream))
    }
}

/// An agent error of a copy: the caller's mistake when the agent says so.
pub(crate) fn file_err(e: agent::Error) -> SandboxError {
    match files::classify(&e) {
        Some(f) => SandboxError::File(f),
        None => SandboxError::Agent(e),
    }
}

impl Inner {
    /// The connections of a running sandbox, or why there are none.
    fn live(&self, id: &str, op: &'static str) -> Result<Live, SandboxError> {
        let slot = self.slot(id)?;
        slot.live().ok_or_else(|| SandboxError::WrongState {
            id: id.to_string(),
            state: slot.state(),
            op,
        })
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, SandboxError> {
        lock(&self.slots)
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(id.chars().take(100).collect()))
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("sandboxes").join(id)
    }

    /// Makes the record, directory and slot of a new sandbox.
    fn new_slot(
        &self,
        spec: &SandboxSpec,
        image_digest: &str,
        process: Process,
        id: Option<String>,
    ) -> Result<Arc<Slot>, SandboxError> {
        let mut slots = lock(&self.slots);
        let id = match id {
            // A warm VM's: its container is named after it already.
            Some(id) if slots.contains_key(&id) => {
                return Err(SandboxError::Task(format!("sandbox id {id} is taken")))
            }
            Some(id) => id,
            None => loop {
                let id = new_id()?;
                if !slots.contains_key(&id) {
                    break id;
                }
            },
        };
        let network = match spec.network {
            Network::None => None,
            Network::Default => Some(self.net.allocate(&id)?),
        };
        let free = |n: &Option<network::SandboxNetwork>| {
            if let Some(n) = n {
                self.net.free(n);
            }
        };
        let dir = self.sandbox_dir(&id);
        if let Err(e) = fs::create_dir(&dir) {
            free(&network);
            return Err(io_err("create directory", &dir)(e));
        }
        let record = SandboxRecord {
            id: id.clone(),
            state: SandboxState::Creating,
            reason: None,
            spec: spec.clone(),
            image_digest: image_digest.to_string(),
            process,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            deadline_unix: None,
            exit: None,
            vmm: None,
            network: network.clone(),
        };
        if let Err(e) = self.db.put(&record) {
            let _ = fs::remove_dir_all(&dir);
            free(&network);
            return Err(e.into());
        }
        let slot = Slot::new(dir, record);
        slots.insert(id, slot.clone());
        Ok(slot)
    }

    /// Updates a slot's record, persists it and publishes its state.
    fn update(&self, slot: &Slot, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
        let record = {
            let mut r = lock(&slot.record);
            f(&mut r);
            r.clone()
        };
        if let Err(e) = self.db.put(&record) {
            // The in-memory record stays right; a restart may then see an
            // older state and re-check the VMM, which is safe.
            tracing::error!("persisting sandbox state: {e}");
        }
        slot.state.send_replace(record.state);
        record
    }

    /// Boots the sandbox of a fresh slot, under its lifecycle lock.
    async fn start(
        self: Arc<Self>,
        slot: Arc<Slot>,
        root_disk: PathBuf,
        spec: SandboxSpec,
        warm: Option<WarmVm>,
    ) -> Result<SandboxRecord, SandboxError> {
        let guard = slot.op.lock().await;
        let mut vmm = None;
        match self.boot(&slot, &root_disk, &spec, warm, &mut vmm).await {
            Ok((live, pumps)) => {
                *lock(&slot.live) = Some(live.clone());
                let deadline = spec.timeout_s.map(|t| unix_now() + t);
                let record = self.update(&slot, |r| {
                    r.state = SandboxState::Running;
                    r.started_at = Some(now_rfc3339());
                    r.deadline_unix = deadline;
                });
                drop(guard);
                tracing::info!("sandbox running");
                self.spawn_monitor(slot, live, pumps, deadline);
                if let Some(key) = warm_key(&root_disk, &spec) {
                    self.refill(key);
                }
                Ok(record)
            }
            Err(failure) => {
                let reason = failure.reason();
                tracing::warn!("sandbox failed to start: {reason}");
                if let Some(vmm) = vmm {
                    vmm.kill_and_wait(KILL_TIMEOUT).await;
                }
                self.release(&slot).await;
                self.update(&slot, |r| {
                    r.state = SandboxState::Failed;
                    r.reason = Some(reason.clone());
                    r.finished_at = Some(now_rfc3339());
                    r.vmm = None;
                });
                drop(guard);
                Err(match failure {
                    BootFailure::Rejected(m, nf) => SandboxError::ProcessRejected {
                        failed_sandbox: Some(slot.id.clone()),
                        executable_not_found: nf,
                        message: m,
                    },
                    BootFailure::Other(reason) => SandboxError::CreateFailed {
                        id: slot.id.clone(),
                        reason,
                    },
                })
            }
        }
    }

    /// Disks, VMM, agent, container, init. The VMM, once started, is put
    /// in `started` so that the caller can kill it when a later step fails.
    async fn boot(
        &self,
        slot: &Slot,
        root_disk: &Path,
        spec: &SandboxSpec,
        warm: Option<WarmVm>,
        started: &mut Option<VmmProcess>,
    ) -> Result<(Live, Vec<JoinHandle<()>>), BootFailure> {
        let network = slot.record().network;
        let warm = match warm {
            Some(vm) => self.adopt_warm(slot, vm).await,
            None => None,
        };
        let client = match warm {
            Some((vmm, client)) => {
                tracing::debug!(pid = vmm.identity().pid, "took a warm VM");
                *started = Some(vmm);
                client
            }
            None => {
                let client = self.boot_vm(slot, root_disk, spec, started).await?;
                client
                    .create_container(
                        CONTAINER_ID,
                        rootfs(),
                        container_setup(&slot.id, network.as_ref()),
                    )
                    .await
                    .map_err(|e| BootFailure::Other(format!("creating the container: {e}")))?;
                tracing::debug!("container created");
                client
            }
        };
        let vmm = started
            .clone()
            .ok_or_else(|| BootFailure::Other("no VMM after boot".into()))?;
        let live = Live {
            client: client.clone(),
            vmm,
        };

        let process = slot.record().process;
        // The agent keeps the init's output while no daemon is connected
        // (a restart), so the workload never writes into a closed pipe.
        let stdio = Stdio {
            stdin: spec.stdin,
            stdout: true,
            stderr: !spec.tty,
            keep_output: true,
        };
        let mut handle = client
            .exec(CONTAINER_ID, INIT_EXEC_ID, process, stdio)
            .await
            .map_err(|e| match rejected(&e) {
                Some((m, nf)) => BootFailure::Rejected(m, nf),
                None => BootFailure::Other(format!("starting the init process: {e}")),
            })?;
        *lock(&slot.init_stdin) = handle.take_stdin();
        let pumps = log_pumps(slot, handle.take_stdout(), handle.take_stderr())
            .map_err(|e| BootFailure::Other(format!("opening the log: {e}")))?;
        Ok((live, pumps))
    }

    /// Boots a VM of its own for a sandbox: scratch disk, network, VMM,
    /// agent. The VMM, once started, is put in `started`.
    async fn boot_vm(
        &self,
        slot: &Slot,
        root_disk: &Path,
        spec: &SandboxSpec,
        started: &mut Option<VmmProcess>,
    ) -> Result<AgentClient, BootFailure> {
        let scratch = slot.scratch();
        let bytes = spec.disk_mib << 20;
        let s = scratch.clone();
        tokio::task::spawn_blocking(move || disk::create_scratch_disk(&s, bytes))
            .await
            .map_err(|e| BootFailure::Other(format!("scratch disk task: {e}")))?
            .map_err(|e| BootFailure::Other(format!("scratch disk: {e}")))?;
        tracing::debug!("scratch disk made");

        let network = slot.record().network;
        if let Some(n) = &network {
            let t = std::time::Instant::now();
            self.net
                .setup(n)
                .await
                .map_err(|e| BootFailure::Other(format!("network: {e}")))?;
            let ms = t.elapsed().as_millis();
            tracing::debug!(ip = %n.ip, netns = %n.netns, ms, "network set up");
        }

        let socket = slot.socket();
        let vmm_log = slot.vmm_log();
        let vmm = VmmProcess::spawn(
            &self.cfg.vmm,
            &Launch {
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
                root_disk,
                scratch_disk: &scratch,
                vsock: &socket,
                log: &vmm_log,
                network: network.as_ref(),
                vhost_net: self.cfg.vhost_net,
                background: false,
            },
        )
        .map_err(|e| BootFailure::Other(format!("starting {}: {e}", self.cfg.vmm.vmm.display())))?;
        let identity = vmm.identity();
        tracing::debug!(pid = identity.pid, "VMM started");
        self.update(slot, |r| r.vmm = Some(identity));
        *started = Some(vmm.clone());

        let client = self
            .connect_booting(&vmm, &socket)
            .await
            .map_err(|reason| BootFailure::Other(format!("{reason}\n{}", log_tail(&vmm_log))))?;
        tracing::debug!("agent reached");
        Ok(client)
    }

    /// Connects to the agent of a booting VM, retrying until the boot
    /// timeout; gives up early when the VMM exits.
    async fn connect_booting(
        &self,
        vmm: &VmmProcess,
        socket: &Path,
    ) -> Result<AgentClient, String> {
        let started = tokio::time::Instant::now();
        let mut last = String::from("the VMM did not create its vsock socket");
        loop {
            if let Some(reason) = vmm.exit_reason() {
                return Err(format!("the VMM {reason} before the agent answered"));
            }
            if started.elapsed() > self.cfg.boot_timeout {
                return Err(format!(
                    "the agent did not answer within {:?} (last attempt: {last})",
                    self.cfg.boot_timeout
                ));
            }
            if socket.exists() {
                match AgentClient::connect(socket, AGENT_VSOCK_PORT, Duration::from_secs(10)).await
                {
                    Ok(c) => return Ok(c.with_request_timeout(Duration::from_secs(60))),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_monitor(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        live: Live,
        pumps: Vec<JoinHandle<()>>,
        deadline_unix: Option<u64>,
    ) {
        let inner = self.clone();
        let span = tracing::info_span!("sandbox", id = %slot.id);
        tokio::spawn(
            async move {
                let deadline = async {
                    match deadline_unix {
                        Some(d) => {
                            tokio::time::sleep(Duration::from_secs(d.saturating_sub(unix_now())))
                                .await
                        }
                        None => pending().await,
                    }
                };
                // Whichever comes first: the init's exit or the VMM's.
                let ended = async {
                    tokio::select! {
                        r = live.client.wait(CONTAINER_ID, INIT_EXEC_ID) => Ok(r),
                        r = live.vmm.wait() => Err(r),
                    }
                };
                tokio::pin!(ended);
                let ended = tokio::select! {
                    e = &mut ended => e,
                    () = deadline => {
                        // The stop waits for this task to see the init exit
                        // (SIGTERM's grace), so it runs on its own.
                        let (inner, slot) = (inner.clone(), slot.clone());
                        tokio::spawn(
                            async move {
                                let _ = inner.stop_slot(&slot, Ending::Timeout, None).await;
                            }
                            .in_current_span(),
                        );
                        ended.await
                    }
                };
                match ended {
                    Ok(Ok(status)) => {
                        // Let the last output reach the log first.
                        for p in pumps {
                            let _ = tokio::time::timeout(DRAIN_TIMEOUT, p).await;
                        }
                        let exit = ExitInfo::from(status);
                        tracing::info!(exit_code = exit.exit_code, "init exited");
                        slot.init_exit.send_replace(Some(exit));
                        let _ = inner.stop_slot(&slot, Ending::InitExited(exit), None).await;
                    }
                    Ok(Err(e)) => {
                        // The VMM may be on its way out: prefer its reason.
                        let why = match live.vmm.wait_timeout(Duration::from_secs(2)).await {
                            Some(r) => format!("the VMM {r}"),
                            None => format!("lost the agent: {e}"),
                        };
                        inner.fail_slot(&slot, why).await;
                    }
                    Err(r) => inner.fail_slot(&slot, format!("the VMM {r}")).await,
                }
            }
            .instrument(span),
        );
    }

    /// Stops a running sandbox (see [`SandboxManager::stop`]).
    async fn stop_slot(
        &self,
        slot: &Slot,
        ending: Ending,
        held: Option<&tokio::sync::MutexGuard<'_, ()>>,
    ) -> Result<SandboxRecord, SandboxError> {
        let _guard = match held {
            Some(_) => None,
            None => Some(slot.op.lock().await),
        };
        match slot.state() {
            SandboxState::Running => {}
            s if s.is_final() => return Ok(slot.record()),
            s => {
                return Err(SandboxError::WrongState {
                    id: slot.id.clone(),
                    state: s,
                    op: "stop",
                })
            }
        }
        let grace = match ending {
            Ending::Timeout => Some(self.cfg.stop_timeout),
            Ending::Requested(g) => Some(g),
            Ending::InitExited(_) | Ending::Deleted => None,
        };
        if let (Some(grace), Some(live)) = (grace, slot.live()) {
            self.terminate_init(slot, &live, grace).await;
        }
        // Nothing in the VM outlives a stop (the scratch disk is removed
        // next), so there is no guest shutdown to wait for.
        if let Some(live) = slot.take_live() {
            if live.vmm.kill_and_wait(KILL_TIMEOUT).await.is_none() {
                tracing::error!(pid = live.vmm.identity().pid, "the VMM could not be killed");
            }
        }
        self.release(slot).await;
        let exited = *slot.init_exit.borrow();
        let (exit, reason) = match ending {
            Ending::InitExited(e) => (Some(e), None),
            Ending::Timeout => (exited, Some("timeout_s reached".to_string())),
            Ending::Requested(_) | Ending::Deleted => (exited, None),
        };
        tracing::info!("sandbox stopped");
        Ok(self.update(slot, |r| {
            r.state = SandboxState::Stopped;
            r.exit = exit;
            r.reason = reason;
            r.finished_at = Some(now_rfc3339());
            r.vmm = None;
        }))
    }

    /// Sends SIGTERM to the init and waits up to `grace` for the monitor
    /// to see it exit.
    /// A delete (`hurry`) or the VMM's death ends the wait early.
    async fn terminate_init(&self, slot: &Slot, live: &Live, grace: Duration) {
        let mut exited = slot.init_exit.subscribe();
        let mut hurry = slot.hurry.subscribe();
        if exited.borrow().is_some()
            || *hurry.borrow()
            || grace.is_zero()
            || !live.client.is_connected()
        {
            return;
        }
        let terminated = async {
            if let Err(e) = live
                .client
                .signal(CONTAINER_ID, INIT_EXEC_ID, SIGTERM)
                .await
            {
                tracing::debug!("SIGTERM to the init: {e}");
            }
            let _ = exited.wait_for(Option::is_some).await;
        };
        tokio::select! {
            () = terminated => {}
            _ = hurry.wait_for(|h| *h) => {}
            _ = live.vmm.wait() => {}
            () = tokio::time::sleep(grace) => {}
        }
    }

    /// Marks a running sandbox failed and releases it.
    async fn fail_slot(&self, slot: &Slot, reason: String) {
        let _guard = slot.op.lock().await;
        if slot.state() != SandboxState::Running {
            return;
        }
        tracing::warn!("sandbox failed: {reason}");
        let live = slot.take_live();
        if let Some(live) = live {
            live.vmm.kill_and_wait(KILL_TIMEOUT).await;
        }
        self.release(slot).await;
        self.update(slot, |r| {
            r.state = SandboxState::Failed;
            r.reason = Some(reason);
            r.finished_at = Some(now_rfc3339());
            r.vmm = None;
        });
    }

    async fn delete_slot(&self, slot: &Slot) -> Result<SandboxRecord, SandboxError> {
        let guard = slot.op.lock().await;
        if slot.state() == SandboxState::Running {
            self.stop_slot(slot, Ending::Deleted, Some(&guard)).await?;
        }
        // A VMM of a failed start may still be recorded.
        let live = slot.take_live();
        if let Some(live) = live {
            live.vmm.kill_and_wait(KILL_TIMEOUT).await;
        }
        if let Some(id) = slot.record().vmm {
            kill_identity(id);
        }
        // The network goes before the record: should it fail, the record
        // keeps the allocation and a later delete tries again.
        self.release_network(slot).await?;
        match fs::remove_dir_all(&slot.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &slot.dir)(e)),
        }
        self.db.remove(&slot.id)?;
        lock(&self.slots).remove(&slot.id);
        let record = {
            let mut r = lock(&slot.record);
            r.state = SandboxState::Deleted;
            r.vmm = None;
            r.clone()
        };
        slot.state.send_replace(SandboxState::Deleted);
        tracing::info!("sandbox deleted");
        Ok(record)
    }

    /// Gives back what a sandbox no longer needs once its VM is gone: its
    /// scratch disk, socket and network. A network that cannot be torn
    /// down stays recorded (and its address taken) for a later try.
    async fn release(&self, slot: &Slot) {
        self.release_files(slot);
        if let Err(e) = self.release_network(slot).await {
            tracing::error!("{e}");
        }
    }

    /// Tears down the sandbox's network, frees its address and clears it
    /// from the record.
    async fn release_network(&self, slot: &Slot) -> Result<(), SandboxError> {
        let Some(n) = slot.record().network else {
            return Ok(());
        };
        let t = std::time::Instant::now();
        self.net.teardown(&n).await?;
        self.net.free(&n);
        self.update(slot, |r| r.network = None);
        let ms = t.elapsed().as_millis();
        tracing::debug!(ip = %n.ip, ms, "network released");
        Ok(())
    }

    /// Removes the files a sandbox no longer needs once its VM is gone.
    fn release_files(&self, slot: &Slot) {
        for p in [slot.scratch(), slot.socket()] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("removing {}: {e}", p.display()),
            }
        }
    }

    /// Takes over one sandbox found in the database at start-up.
    async fn reattach(self: &Arc<Self>, record: SandboxRecord) {
        let dir = self.sandbox_dir(&record.id);
        let span = tracing::info_span!("sandbox", id = %record.id);
        let state = record.state;
        let slot = Slot::new(dir, record);
        lock(&self.slots).insert(slot.id.clone(), slot.clone());
        match state {
            SandboxState::Running => {
                let found = slot.record().vmm.and_then(VmmProcess::adopt);
                let Some(vmm) = found else {
                    self.mark_failed_at_start(
                        &slot,
                        "the VMM process was gone when cocoond started",
                    )
                    .await;
                    return;
                };
                let connected =
                    AgentClient::connect(&slot.socket(), AGENT_VSOCK_PORT, REATTACH_TIMEOUT)
                        .instrument(span.clone())
                        .await;
                match connected {
                    Ok(client) => {
                        let client = client.with_request_timeout(Duration::from_secs(60));
                        // The init's output again goes to its log, starting
                        // with what the agent kept while no daemon was
                        // connected.
                        let outputs = Stdio {
                            stderr: !slot.record().spec.tty,
                            ..Stdio::output()
                        };
                        // What the log holds: output sent past it (lost
                        // with the old daemon) comes again.
                        let stored = match logs::stored_bytes(&slot.init_log()) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                span.in_scope(|| tracing::warn!("init log: {e}"));
                                None
                            }
                        };
                        let attached = client.attach(CONTAINER_ID, INIT_EXEC_ID, outputs, stored);
                        let pumps = match attached.await {
                            Ok((out, err)) => log_pumps(&slot, out, err).unwrap_or_else(|e| {
                                span.in_scope(|| tracing::warn!("init log: {e}"));
                                Vec::new()
                            }),
                            Err(e) => {
                                span.in_scope(|| {
                                    tracing::warn!("the init's output cannot be re-attached: {e}")
                                });
                                Vec::new()
                            }
                        };
                        let live = Live { client, vmm };
                        *lock(&slot.live) = Some(live.clone());
                        let deadline = slot.record().deadline_unix;
                        span.in_scope(|| tracing::info!("re-attached running sandbox"));
                        self.spawn_monitor(slot, live, pumps, deadline);
                    }
                    Err(e) => {
                        vmm.kill_and_wait(KILL_TIMEOUT).await;
                        self.mark_failed_at_start(
                            &slot,
                            &format!("its agent did not answer when cocoond started: {e}"),
                        )
                        .await;
                    }
                }
            }
            SandboxState::Creating => {
                if let Some(id) = slot.record().vmm {
                    kill_identity(id);
                }
                self.mark_failed_at_start(
                    &slot,
                    "cocoond stopped while the sandbox was being created",
                )
                .await;
            }
            SandboxState::Stopped | SandboxState::Failed => {
                if let Some(id) = slot.record().vmm {
                    kill_identity(id);
                }
                self.release(&slot).await;
            }
            SandboxState::Deleted => {
                if let Err(e) = self.release_network(&slot).await {
                    tracing::error!(id = %slot.id, "{e}");
                }
                let _ = fs::remove_dir_all(&slot.dir);
                let _ = self.db.remove(&slot.id);
                lock(&self.slots).remove(&slot.id);
            }
        }
    }

    async fn mark_failed_at_start(&self, slot: &Slot, reason: &str) {
        tracing::warn!(id = %slot.id, "{reason}");
        self.release(slot).await;
        self.update(slot, |r| {
            r.state = SandboxState::Failed;
            r.reason = Some(reason.to_string());
            r.finished_at = Some(now_rfc3339());
            r.vmm = None;
        });
    }

    /// Takes a live warm VM of shape `key` (dead ones met on the way are
    /// discarded). `None`: none there, boot one.
    fn take_warm(&self, key: &WarmKey) -> Option<WarmVm> {
        while let Some(vm) = self.pool.take(key) {
            if vm.vmm.exit_reason().is_none() && vm.client.is_connected() {
                return Some(vm);
            }
            tracing::warn!(pid = vm.vmm.identity().pid, "a warm VM died; discarded");
            tokio::spawn(discard_warm(vm));
        }
        None
    }

    /// Makes a warm VM the slot's (whose id it was booted for): its scratch
    /// disk, socket and log move into the slot's directory, its identity
    /// into the record (before its warm directory, which names it too,
    /// goes), and it gets the normal CPU priority. `None` (the VM
    /// discarded, the slot's directory as before): boot one instead.
    async fn adopt_warm(&self, slot: &Slot, vm: WarmVm) -> Option<(VmmProcess, AgentClient)> {
        const FILES: [&str; 3] = ["scratch.ext4", "vsock.sock", "vmm.log"];
        if let Err(e) = FILES
            .iter()
            .try_for_each(|f| fs::rename(vm.dir.join(f), slot.dir.join(f)))
        {
            tracing::warn!("moving a warm VM's files into {}: {e}", slot.dir.display());
            for f in FILES {
                let _ = fs::remove_file(slot.dir.join(f));
            }
            discard_warm(vm).await;
            return None;
        }
        self.update(slot, |r| r.vmm = Some(vm.vmm.identity()));
        if let Err(e) = fs::remove_dir_all(&vm.dir) {
            tracing::warn!("removing {}: {e}", vm.dir.display());
        }
        if let Err(e) = vm.vmm.to_foreground() {
            tracing::warn!("raising the priority of a warm VM: {e}");
        }
        Some((vm.vmm, vm.client))
    }

    /// Sandboxes of shape `key` are wanted: the pool gives back VMs of
    /// another shape and, if it is not full, a filler boots VMs (one at a
    /// time, at the lowest CPU priority) until it is.
    fn refill(self: &Arc<Self>, key: WarmKey) {
        let (stale, start) = self.pool.want(&key);
        for vm in stale {
            tokio::spawn(discard_warm(vm));
        }
        if !start {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            while let Some(key) = inner.pool.next_fill() {
                match inner.boot_warm(&key).await {
                    Ok(vm) => {
                        tracing::debug!(pid = vm.vmm.identity().pid, "warm VM ready");
                        if let Some(vm) = inner.pool.put(&key, vm) {
                            discard_warm(vm).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("booting a warm VM: {e}");
                        inner.pool.fill_failed();
                        return;
                    }
                }
            }
        });
    }

    /// Boots one VM of shape `key` into `<state>/warm/ID/` and creates its
    /// container, named for the sandbox id `ID` that will take it.
    async fn boot_warm(&self, key: &WarmKey) -> Result<WarmVm, String> {
        let id = new_id().map_err(|e| e.to_string())?;
        let dir = self.cfg.state_dir.join("warm").join(&id);
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let (scratch, socket, log) = (
            dir.join("scratch.ext4"),
            dir.join("vsock.sock"),
            dir.join("vmm.log"),
        );
        let booted = async {
            let (s, bytes) = (scratch.clone(), key.disk_mib << 20);
            tokio::task::spawn_blocking(move || disk::create_scratch_disk(&s, bytes))
                .await
                .map_err(|e| format!("scratch disk task: {e}"))?
                .map_err(|e| format!("scratch disk: {e}"))?;
            let gate = self.warm_gate.read().await;
            if self.pool.is_closed() {
                return Err("the warm pool was closed".to_string());
            }
            let vmm = VmmProcess::spawn(
                &self.cfg.vmm,
                &Launch {
                    vcpus: key.vcpus,
                    memory_mib: key.memory_mib,
                    root_disk: &key.root_disk,
                    scratch_disk: &scratch,
                    vsock: &socket,
                    log: &log,
                    network: None,
                    vhost_net: false,
                    background: true,
                },
            )
            .map_err(|e| format!("starting {}: {e}", self.cfg.vmm.vmm.display()))?;
            let identity = serde_json::to_vec(&vmm.identity()).map_err(|e| e.to_string());
            let written = identity.and_then(|j| {
                fs::write(dir.join("vmm.json"), j).map_err(|e| format!("writing vmm.json: {e}"))
            });
            drop(gate);
            let client = match written {
                Ok(()) => self.connect_booting(&vmm, &socket).await,
                Err(e) => Err(e),
            };
            let client = match client {
                Ok(c) => c
                    .create_container(CONTAINER_ID, rootfs(), container_setup(&id, None))
                    .await
                    .map(|()| c)
                    .map_err(|e| format!("creating the container: {e}")),
                Err(e) => Err(e),
            };
            match client {
                Ok(client) => Ok(WarmVm {
                    id: id.clone(),
                    dir: dir.clone(),
                    vmm,
                    client,
                }),
                Err(e) => {
                    vmm.kill_and_wait(KILL_TIMEOUT).await;
                    Err(format!("{e}\n{}", log_tail(&log)))
                }
            }
        };
        let r = booted.await;
        if r.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        r
    }

    /// Removes sandbox directories no record knows (a crash between making
    /// the directory and writing the record).
    fn remove_unknown_dirs(&self, sandboxes: &Path, known: &HashSet<String>) {
        let Ok(entries) = fs::read_dir(sandboxes) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!("removing leftover sandbox directory {name}");
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

enum BootFailure {
    /// The agent refused the init process: the client's command is wrong.
    Rejected(String, bool),
    Other(String),
}

impl BootFailure {
    fn reason(&self) -> String {
        match self {
            BootFailure::Rejected(m, _) | BootFailure::Other(m) => m.clone(),
        }
    }
}

/// The agent's refusal of a process, when the client's input caused it,
/// and whether it is because the program does not exist.
fn rejected(e: &agent::Error) -> Option<(String, bool)> {
    match e {
        agent::Error::Agent(body)
            if matches!(
                body.code,
                ErrorCode::ExecutableNotFound
                    | ErrorCode::InvalidArgument
                    | ErrorCode::NotFound
                    | ErrorCode::PermissionDenied
            ) =>
        {
            Some((
                body.message.clone(),
                body.code == ErrorCode::ExecutableNotFound,
            ))
        }
        _ => None,
    }
}

/// An exec the agent did not start: the client's fault or not.
fn exec_refused(e: agent::Error) -> SandboxError {
    match rejected(&e) {
        Some((message, nf)) => SandboxError::ProcessRejected {
            failed_sandbox: None,
            executable_not_found: nf,
            message,
        },
        None => SandboxError::Agent(e),
    }
}

/// Copies one output stream of the init process into the log, telling
/// followers through `appended`.
async fn pump(
    mut stream: OutputStream,
    log: Arc<LogWriter>,
    which: LogStream,
    appended: watch::Sender<()>,
) {
    loop {
        match stream.next_chunk().await {
            Ok(Some(data)) => {
                if let Err(e) = log.append(which, &data) {
                    tracing::warn!("writing {}: {e}", log.path().display());
                }
                appended.send_replace(());
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("init output stream ended: {e}");
                return;
            }
        }
    }
}

/// Tasks that append the init's output streams to its log.
fn log_pumps(
    slot: &Slot,
    stdout: Option<OutputStream>,
    stderr: Option<OutputStream>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let log = Arc::new(LogWriter::open(&slot.init_log())?);
    let mut pumps = Vec::new();
    for (stream, which) in [(stdout, LogStream::Stdout), (stderr, LogStream::Stderr)] {
        if let Some(stream) = stream {
            pumps.push(tokio::spawn(
                pump(stream, log.clone(), which, slot.log_appended.clone())
                    .instrument(tracing::Span::current()),
            ));
        }
    }
    Ok(pumps)
}

/// Runs one exec to completion.
async fn run_exec(
    client: &AgentClient,
    exec_id: &str,
    process: Process,
    spec: &ExecSpec,
) -> Result<ExecOutput, SandboxError> {
    let stdio = Stdio {
        stdin: spec.stdin.is_some(),
        ..Stdio::output()
    };
    let mut h = client
        .exec(CONTAINER_ID, exec_id, process, stdio)
        .await
        .map_err(exec_refused)?;
    let stdin = h.take_stdin();
    let stdout = h.take_stdout();
    let stderr = h.take_stderr();
    let input = spec.stdin.clone();
    let feed = async move {
        if let (Some(mut s), Some(data)) = (stdin, input) {
            // The process may exit without reading: that is not an error.
            let _ = s.write_all(data.as_bytes()).await;
            let _ = s.close();
        }
    };
    let limit = async {
        match spec.timeout_s {
            Some(t) => tokio::time::sleep(Duration::from_secs(t)).await,
            None => pending().await,
        }
    };
    let waited = async {
        tokio::pin!(limit);
        tokio::select! {
            r = h.wait() => (r, false),
            _ = &mut limit => {
                let _ = h.signal(9).await;
                (h.wait().await, true)
            }
        }
    };
    let ((out, out_cut), (err, err_cut), (status, timed_out), ()) =
        tokio::join!(collect(stdout), collect(stderr), waited, feed);
    Ok(ExecOutput {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        exit: ExitInfo::from(status?),
        truncated: out_cut || err_cut,
        timed_out,
    })
}

/// Reads a stream to its end, keeping at most [`MAX_EXEC_OUTPUT`] bytes.
async fn collect(stream: Option<OutputStream>) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut cut = false;
    while let Ok(Some(chunk)) = stream.next_chunk().await {
        let room = MAX_EXEC_OUTPUT - out.len();
        if chunk.len() > room {
            cut = true;
        }
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    (out, cut)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh sandbox id: 12 random lowercase hex characters.
fn new_id() -> Result<String, SandboxError> {
    let mut b = [0u8; 6];
    let path = Path::new("/dev/urandom");
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    std::io::Read::read_exact(&mut f, &mut b).map_err(io_err("read", path))?;
    Ok(hex::encode(b))
}

/// The warm-pool shape of a sandbox, if it can use one (no network: a
/// VMM with a NIC starts inside the sandbox's own namespace).
fn warm_key(root_disk: &Path, spec: &SandboxSpec) -> Option<WarmKey> {
    (spec.network == Network::None).then(|| WarmKey {
        root_disk: root_disk.to_path_buf(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        disk_mib: spec.disk_mib,
    })
}

/// Where the container's disks are in every VM.
fn rootfs() -> Rootfs {
    Rootfs {
        image: "/dev/vda".into(),
        image_fstype: DiskFormat::Erofs.to_string(),
        scratch: Some("/dev/vdb".into()),
    }
}

/// The container of sandbox `id`: as Docker, the sandbox's own address
/// names it, and a networked sandbox resolves names with the host's usable
/// name servers.
fn container_setup(id: &str, network: Option<&network::SandboxNetwork>) -> ContainerSetup {
    let own = network.map_or_else(|| "127.0.1.1".to_string(), |n| n.ip.to_string());
    ContainerSetup {
        hostname: Some(id.to_string()),
        hosts: Some(format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n{own}\t{id}\n"
        )),
        resolv_conf: network.map(|_| network::dns::host_resolv_conf()),
    }
}

/// Kills a warm VM and removes its files.
async fn discard_warm(vm: WarmVm) {
    if vm.vmm.kill_and_wait(KILL_TIMEOUT).await.is_none() {
        tracing::error!(pid = vm.vmm.identity().pid, "a warm VM could not be killed");
    }
    let _ = fs::remove_dir_all(&vm.dir);
}

/// Kills the warm VMs an earlier daemon left (it did not stop cleanly) and
/// removes their files.
fn remove_warm_leftovers(warm: &Path) {
    let Ok(entries) = fs::read_dir(warm) else {
        return;
    };
    for e in entries.flatten() {
        let identity = fs::read(e.path().join("vmm.json"))
            .ok()
            .and_then(|j| serde_json::from_slice::<VmmIdentity>(&j).ok());
        if let Some(id) = identity {
            tracing::info!(pid = id.pid, "killing a warm VM and removing its files");
            kill_identity(id);
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

/// The last lines of the VMM's log, for failure reasons.
fn log_tail(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    let cut = tail.len().saturating_sub(2000);
    let start = (cut..=tail.len())
        .find(|&i| tail.is_char_boundary(i))
        .unwrap_or(tail.len());
    format!("--- {} (tail)\n{}", path.display(), &tail[start..])
}
