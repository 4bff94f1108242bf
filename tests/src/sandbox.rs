//! A real sandbox for agent tests: the built-in busybox image as a
//! read-only erofs root disk, a fresh sparse ext4 scratch disk, a
//! `cocoon-vmm` child process running the agent initramfs in serve mode,
//! and an [`AgentClient`] connected to it with one container created.
//!
//! Tests are plain synchronous `#[test]` functions: each [`Sandbox`] owns a
//! single-threaded tokio runtime, and every asynchronous step goes through
//! [`Sandbox::block_on`], which has a deadline. A step that runs out of time
//! or fails panics with the VMM's state, its stderr and the tail of the
//! guest console, so a broken agent fails a test instead of hanging the run.
//!
//! This is test scaffolding, not the runtime's sandbox lifecycle: no jail,
//! no network, no persisted state.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as ProcessStdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cocoon_proto::{ExitStatus, Process, Rootfs, User};
use cocoon_runtime::agent::{
    self, AgentClient, ContainerSetup, ExecHandle, Stdio, AGENT_VSOCK_PORT,
};
use cocoon_runtime::image::{busybox, disk, DiskFormat, Images};
use sha2::{Digest as _, Sha256};

use crate::{initrd, kernel, require_linux_kvm, vmm_bin, BOOT_DEADLINE};

/// Time allowed for one ordinary agent operation (an exec and its output,
/// a stats call). Generous because the guest may run under nested
/// virtualisation in an emulated test machine.
pub const OP_DEADLINE: Duration = Duration::from_secs(120);

/// The container every sandbox creates unless told not to.
pub const CONTAINER: &str = "c1";

/// `PATH` for processes started by these helpers.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Boot deadline once an earlier sandbox of this test process never
/// reached its agent: with an agent that does not serve, every test would
/// otherwise wait the full [`BOOT_DEADLINE`] and the run would outlast the
/// test machine's time limit without reporting anything.
const FAIL_FAST_DEADLINE: Duration = Duration::from_secs(30);

/// Set when a sandbox timed out waiting for its agent.
static AGENT_NEVER_ANSWERED: AtomicBool = AtomicBool::new(false);

/// How much of the console and of the VMM's stderr is kept for messages.
const TAIL_BYTES: usize = 64 << 10;

/// How to boot a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Guest memory.
    pub memory_mib: u64,
    /// Guest vCPUs.
    pub vcpus: u32,
    /// Size of the sparse scratch disk.
    pub scratch_mib: u64,
    /// Create container [`CONTAINER`] on the image and scratch disks after
    /// connecting.
    pub create_container: bool,
    /// Appended to the guest kernel command line.
    pub extra_cmdline: String,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            memory_mib: 256,
            vcpus: 2,
            scratch_mib: 256,
            create_container: true,
            extra_cmdline: String::new(),
        }
    }
}

/// What a process run to completion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Its stdout (lossily decoded).
    pub stdout: String,
    /// Its stderr (lossily decoded).
    pub stderr: String,
    /// How it ended.
    pub status: ExitStatus,
}

/// A booted VM with the agent connected. Dropping it kills the VMM.
pub struct Sandbox {
    // Dropped in this order: the connection, then the runtime its tasks
    // run on, then the VMM, then the directory holding its files.
    client: AgentClient,
    rt: tokio::runtime::Runtime,
    vmm: Vmm,
    root_disk: PathBuf,
    scratch_disk: PathBuf,
    socket: PathBuf,
    container_id: Option<String>,
    next_exec: AtomicU32,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("client", &self.client)
            .field("root_disk", &self.root_disk)
            .field("scratch_disk", &self.scratch_disk)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the disks, starts the VMM, connects to the agent (retrying
    /// until [`BOOT_DEADLINE`]) and creates the container. Panics with
    /// the VMM's output if any step fails.
    pub fn boot(opts: SandboxOptions) -> Sandbox {
        require_linux_kvm();
        let root_disk = busybox_root_disk();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temp dir: {e}"));
        let scratch_disk = dir.path().join("scratch.ext4");
        disk::create_scratch_disk(&scratch_disk, opts.scratch_mib << 20)
            .unwrap_or_else(|e| panic!("creating the scratch disk: {e}"));
        let socket = dir.path().join("v.sock");
        let cmdline = format!("quiet cocoon.mode=serve {}", opts.extra_cmdline);
        let mut cmd = Command::new(vmm_bin());
        cmd.arg("--kernel")
            .arg(kernel())
            .arg("--initrd")
            .arg(initrd())
            .args(["--memory-mib", &opts.memory_mib.to_string()])
            .args(["--vcpus", &opts.vcpus.to_string()])
            .arg("--disk")
            .arg(format!("{},ro,id=image", root_disk.display()))
            .arg("--disk")
            .arg(format!("{},id=scratch", scratch_disk.display()))
            .arg("--vsock")
            .arg(&socket)
            .args(["--cmdline", cmdline.trim_end()])
            .arg("--console");
        let vmm = Vmm::spawn(cmd);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building a tokio runtime: {e}"));
        let client = connect(&rt, &vmm, &socket);
        let mut sb = Sandbox {
            client,
            rt,
            vmm,
            root_disk,
            scratch_disk,
            socket: socket.clone(),
            container_id: None,
            next_exec: AtomicU32::new(1),
            _dir: dir,
        };
        if opts.create_container {
            sb.create_container(CONTAINER);
        }
        sb
    }

    /// Boots with [`SandboxOptions::default`].
    pub fn boot_default() -> Sandbox {
        Sandbox::boot(SandboxOptions::default())
    }

    /// Creates a container with the image disk (`/dev/vda`, erofs) as its
    /// lower layer and the scratch disk (`/dev/vdb`) as its upper layer;
    /// the helpers that take no container id use it from then on.
    pub fn create_container(&mut self, id: &str) {
        let rootfs = Rootfs {
            image: "/dev/vda".into(),
            image_fstype: "erofs".into(),
            scratch: Some("/dev/vdb".into()),
        };
        self.ok(
            "create_container",
            self.client
                .create_container(id, rootfs, ContainerSetup::default()),
        );
        self.container_id = Some(id.to_string());
    }

    /// The agent connection.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// The container created at boot.
    pub fn container_id(&self) -> &str {
        self.container_id
            .as_deref()
            .unwrap_or_else(|| panic!("this sandbox has no container"))
    }

    /// The read-only root disk (shared by every sandbox of this process).
    pub fn root_disk(&self) -> &Path {
        &self.root_disk
    }

    /// This sandbox's scratch disk.
    pub fn scratch_disk(&self) -> &Path {
        &self.scratch_disk
    }

    /// The VMM's hybrid vsock socket (`CONNECT <port>` reaches the guest).
    pub fn vsock_socket(&self) -> &Path {
        &self.socket
    }

    /// A fresh exec id.
    pub fn next_exec_id(&self) -> String {
        format!("e{}", self.next_exec.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs `fut` on this sandbox's runtime; panics with the diagnostics if
    /// it takes longer than `limit`.
    pub fn block_on<F: Future>(&self, what: &str, limit: Duration, fut: F) -> F::Output {
        // The timer must be created inside the runtime.
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, fut).await })
        {
            Ok(v) => v,
            Err(_) => panic!(
                "{what} did not finish within {limit:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Runs an agent call with [`OP_DEADLINE`]; panics with the diagnostics
    /// if it fails or takes too long.
    pub fn ok<T>(&self, what: &str, fut: impl Future<Output = agent::Result<T>>) -> T {
        self.check(what, self.block_on(what, OP_DEADLINE, fut))
    }

    /// Unwraps an agent result, panicking with the diagnostics.
    pub fn check<T>(&self, what: &str, r: agent::Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{what} failed: {e}\n{}", self.diagnostics()))
    }

    /// Starts `process` in the container with the given stdio streams.
    pub fn exec(&self, process: Process, stdio: Stdio) -> ExecHandle {
        let exec_id = self.next_exec_id();
        let what = format!("exec {:?}", process.args);
        self.ok(
            &what,
            self.client
                .exec(self.container_id(), &exec_id, process, stdio),
        )
    }

    /// Waits (up to [`OP_DEADLINE`]) for a process started with
    /// [`exec`](Self::exec) to exit.
    pub fn wait(&self, handle: &ExecHandle) -> ExitStatus {
        self.ok(&format!("wait for {}", handle.exec_id()), handle.wait())
    }

    /// Runs `args` (with [`process`]'s defaults) to completion and returns
    /// its output.
    pub fn run(&self, args: &[&str]) -> RunOutput {
        self.run_process(process(args))
    }

    /// Runs `process` to completion (stdout and stderr collected, no stdin)
    /// and returns its output.
    pub fn run_process(&self, process: Process) -> RunOutput {
        let what = format!("running {:?}", process.args);
        let exec_id = self.next_exec_id();
        self.ok(
            &what,
            collect(&self.client, self.container_id(), &exec_id, process),
        )
    }

    /// The VMM's process id.
    pub fn vmm_pid(&self) -> u32 {
        self.vmm.child().id()
    }

    /// Whether the VMM has exited, and how.
    pub fn vmm_exited(&self) -> Option<std::process::ExitStatus> {
        self.vmm.try_wait()
    }

    /// Waits for the VMM to exit; panics with the diagnostics after `limit`.
    pub fn wait_vmm_exit(&self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.vmm.try_wait() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "cocoon-vmm did not exit within {limit:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The guest console so far (the tail kept).
    pub fn console(&self) -> String {
        self.vmm.console.text()
    }

    /// The VMM's state, the connection's state, the VMM's stderr and the
    /// end of the guest console: for assertion messages.
    pub fn diagnostics(&self) -> String {
        self.vmm.diagnostics(Some(&self.client))
    }
}

/// The process description the helpers use: `args` as root in `/` with
/// [`PATH_ENV`], no terminal, no limits.
pub fn process(args: &[&str]) -> Process {
    Process {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![PATH_ENV.to_string(), "HOME=/root".to_string()],
        cwd: "/".to_string(),
        user: User::default(),
        rlimits: Vec::new(),
        terminal: false,
        console_size: None,
        no_new_privileges: false,
        capabilities: None,
    }
}

/// Runs `process` in `container_id` as `exec_id` and collects its stdout,
/// stderr and exit status (read concurrently, so neither pipe fills). No
/// deadline of its own: callers bound it.
pub async fn collect(
    client: &AgentClient,
    container_id: &str,
    exec_id: &str,
    process: Process,
) -> agent::Result<RunOutput> {
    let mut h = client
        .exec(container_id, exec_id, process, Stdio::output())
        .await?;
    let mut out = h
        .take_stdout()
        .ok_or_else(|| agent::Error::InvalidArgument("no stdout stream".into()))?;
    let mut err = h
        .take_stderr()
        .ok_or_else(|| agent::Error::InvalidArgument("no stderr stream".into()))?;
    let (stdout, stderr, status) = tokio::join!(out.read_all(), err.read_all(), h.wait());
    Ok(RunOutput {
        stdout: String::from_utf8_lossy(&stdout?).into_owned(),
        stderr: String::from_utf8_lossy(&stderr?).into_owned(),
        status: status?,
    })
}

/// Lowercase hex SHA-256 of `bytes`, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` bytes of a reproducible pseudo-random pattern (xorshift64 from
/// `seed`): data that compresses badly and shows misplaced chunks.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_pattern(&mut (seed | 1), &mut v);
    v
}

/// Fills `buf` from the xorshift64 state `state`, advancing it.
pub fn fill_pattern(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        let n = chunk.len();
        chunk.copy_from_slice(&x.to_le_bytes()[..n]);
    }
}

/// Where the test image store lives: `$COCOON_TEST_STORE`, else
/// `/var/tmp/cocoon-test-store` (reused across runs on one machine; inside
/// the test machine it lives in the L1's RAM for one run).
pub fn test_store_dir() -> PathBuf {
    std::env::var_os("COCOON_TEST_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cocoon-test-store"))
}

/// The erofs root disk of the built-in busybox image (from the host's
/// `/bin/busybox`), built through cocoon-runtime once per test process and
/// cached in [`test_store_dir`] by image digest.
pub fn busybox_root_disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let dir = test_store_dir();
        let images = Images::open(&dir)
            .unwrap_or_else(|e| panic!("opening the image store {}: {e}", dir.display()));
        // The image is reproducible (fixed mtimes), so importing it again
        // finds the same digest and the cached disk.
        let imported = images
            .import_busybox(Path::new(busybox::DEFAULT_BUSYBOX))
            .unwrap_or_else(|e| panic!("building the busybox image: {e}"));
        let manifest = imported.record.manifest.to_string();
        images
            .root_disk(&manifest, DiskFormat::Erofs)
            .unwrap_or_else(|e| panic!("building the busybox root disk: {e}"))
            .path
    })
    .clone()
}

/// Connects to the agent, retrying while the guest boots; panics if the
/// VMM exits or [`BOOT_DEADLINE`] passes first (or [`FAIL_FAST_DEADLINE`]
/// once an earlier sandbox timed out).
fn connect(rt: &tokio::runtime::Runtime, vmm: &Vmm, socket: &Path) -> AgentClient {
    let start = Instant::now();
    let (deadline, why) = if AGENT_NEVER_ANSWERED.load(Ordering::Relaxed) {
        (
            FAIL_FAST_DEADLINE,
            " (shortened: an earlier sandbox in this run never reached its agent)",
        )
    } else {
        (BOOT_DEADLINE, "")
    };
    let mut last = String::from("(no attempt)");
    loop {
        if vmm.try_wait().is_some() {
            panic!(
                "cocoon-vmm exited before the agent answered (last attempt: {last})\n{}",
                vmm.diagnostics(None)
            );
        }
        if start.elapsed() > deadline {
            AGENT_NEVER_ANSWERED.store(true, Ordering::Relaxed);
            panic!(
                "the agent did not answer on vsock port {AGENT_VSOCK_PORT} within \
                 {deadline:?}{why} (last attempt: {last}; an empty reply means nothing \
                 listens on that port in the guest)\n{}",
                vmm.diagnostics(None)
            );
        }
        // The socket appears when the VMM has started; until the agent
        // listens, the VMM refuses the CONNECT.
        if socket.exists() {
            let attempt = rt.block_on(AgentClient::connect(
                socket,
                AGENT_VSOCK_PORT,
                Duration::from_secs(15),
            ));
            match attempt {
                Ok(c) => return c.with_request_timeout(OP_DEADLINE),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The VMM child process and what it has printed.
struct Vmm {
    child: Mutex<Child>,
    console: Tail,
    stderr: Tail,
}

impl Vmm {
    fn spawn(mut cmd: Command) -> Vmm {
        let mut child = cmd
            .stdin(ProcessStdio::null())
            .stdout(ProcessStdio::piped())
            .stderr(ProcessStdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()));
        let console = Tail::default();
        let stderr = Tail::default();
        if let Some(out) = child.stdout.take() {
            console.drain_from(out);
        }
        if let Some(err) = child.stderr.take() {
            stderr.drain_from(err);
        }
        Vmm {
            child: Mutex::new(child),
            console,
            stderr,
        }
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    fn diagnostics(&self, client: Option<&AgentClient>) -> String {
        let state = match self.try_wait() {
            Some(s) => format!("exited: {s}"),
            None => format!("running (pid {})", self.child().id()),
        };
        let conn = match client {
            None => "not connected".to_string(),
            Some(c) => match c.disconnect_reason() {
                None => "connected".to_string(),
                Some(r) => format!("lost: {r}"),
            },
        };
        format!(
            "--- cocoon-vmm: {state}; agent connection: {conn}\n--- cocoon-vmm stderr (tail)\n{}\n--- guest console (tail)\n{}",
            last_lines(&self.stderr.text(), 40),
            last_lines(&self.console.text(), 80),
        )
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let mut child = self.child();
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = child.kill();
        // Bounded: a VMM stuck in the kernel must not hang the test run.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("cocoon-vmm pid {} could not be reaped", child.id());
    }
}

/// The last [`TAIL_BYTES`] (or so) of a stream, filled by a thread.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    fn drain_from(&self, mut r: impl Read + Send + 'static) {
        let buf = self.0.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(&chunk[..n]);
                if b.len() > 2 * TAIL_BYTES {
                    let cut = b.len() - TAIL_BYTES;
                    b.drain(..cut);
                }
            }
        });
    }

    fn text(&self) -> String {
        let b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
