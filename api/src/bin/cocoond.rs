//! `cocoond`: Cocoon's REST daemon. Serves the API on a Unix socket (and on
//! TCP with a bearer token when asked), on top of the runtime's sandbox
//! manager. Sandbox VMs outlive it: a restarted daemon takes them over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cocoon_api::backend::RuntimeBackend;
use cocoon_api::{routes, server};
use cocoon_runtime::image::PullOptions;
use cocoon_runtime::sandbox::{spec, Limits, ManagerConfig, SandboxManager, VmmPaths};

/// Where `make install` puts things (PREFIX=/usr/local).
const INSTALLED_VMM: &str = "/usr/local/bin/cocoon-vmm";
const INSTALLED_KERNEL: &str = "/usr/local/share/cocoon/vmlinux";
const INSTALLED_INITRD: &str = "/usr/local/share/cocoon/initramfs.img";

#[derive(Debug, Parser)]
#[command(
    name = "cocoond",
    version,
    about = "Cocoon's REST daemon: sandboxes in micro-VMs"
)]
struct Args {
    /// Unix socket to serve on.
    #[arg(long, default_value = "/run/cocoon/cocoond.sock")]
    socket: PathBuf,
    /// State directory (images, sandbox database and files).
    #[arg(long, default_value = cocoon_runtime::image::store::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Also serve on this TCP address (e.g. 127.0.0.1:8710); needs --token-file.
    #[arg(long)]
    listen: Option<String>,
    /// File holding the bearer token TCP clients must send.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The VMM binary [default: /usr/local/bin/cocoon-vmm, else the
    /// cocoon-vmm next to this binary].
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// The guest kernel [default: /usr/local/share/cocoon/vmlinux, else the
    /// repository's build/vmlinux].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The agent initramfs [default: /usr/local/share/cocoon/initramfs.img,
    /// else the repository's build/initramfs.img].
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Static busybox the built-in `busybox` image is made from.
    #[arg(long, default_value = cocoon_runtime::image::busybox::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    /// Seconds a sandbox may take from VMM start to a reachable agent.
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// A registry (host[:port]) reached over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// PEM file of CA certificates trusted for registries (in addition to
    /// the system's).
    #[arg(long, value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// VMs to keep booted ahead of demand, in the shape (image, vCPUs,
    /// memory, disk) of the last `network: none` sandbox created: a create
    /// of that shape skips the boot. 0 turns the pool off.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    warm_pool: u16,
    /// Seconds a stop gives the init after SIGTERM before the VM is killed
    /// (a client's `?timeout=` overrides it), 0 to 3600.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    stop_timeout: u64,
    /// How networked sandboxes' NICs move frames: `on` through the host
    /// kernel's vhost-net (/dev/vhost-net; cocoond refuses to start
    /// without it), `off` through the VMM's own event loop, `auto` vhost-net
    /// when /dev/vhost-net can be opened (after `modprobe vhost_net`).
    #[arg(long, value_enum, default_value_t = NetVhost::Auto)]
    net_vhost: NetVhost,
    /// IPv4 range `network: default` sandboxes take their /30 subnets from
    /// (give each daemon on a host its own).
    #[arg(long, value_name = "CIDR", default_value = "10.200.0.0/16")]
    network_pool: cocoon_runtime::network::Pool,
    /// Most vCPUs a sandbox may ask for (creates above answer 400).
    #[arg(long, value_name = "N", default_value_t = spec::MAX_VCPUS)]
    max_vcpus: u32,
    /// Most guest memory a sandbox may ask for, MiB (at least the default 256).
    #[arg(long, value_name = "MIB", default_value_t = spec::MAX_MEMORY_MIB)]
    max_memory_mib: u64,
    /// Largest scratch disk a sandbox may ask for, MiB (at least the default 1024).
    #[arg(long, value_name = "MIB", default_value_t = spec::MAX_DISK_MIB)]
    max_disk_mib: u64,
}

/// `--net-vhost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetVhost {
    Auto,
    On,
    Off,
}

/// Whether networked sandboxes get vhost-net, for `mode`; says which.
fn vhost_net(mode: NetVhost) -> Result<bool> {
    let found = match mode {
        NetVhost::Off => Err("--net-vhost off".to_string()),
        _ => cocoon_runtime::network::vhost::available(),
    };
    match (mode, found) {
        (_, Ok(())) => {
            tracing::info!("networked sandboxes use vhost-net");
            Ok(true)
        }
        (NetVhost::On, Err(e)) => bail!("--net-vhost on: {e}"),
        (_, Err(e)) => {
            tracing::info!("networked sandboxes use the VMM's own virtio-net data path: {e}");
            Ok(false)
        }
    }
}

/// The first of `candidates` that exists, or an error naming them all.
fn locate(what: &str, given: Option<PathBuf>, candidates: Vec<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("{what} {} does not exist", p.display());
        }
        return Ok(p);
    }
    for c in &candidates {
        if c.exists() {
            return Ok(c.clone());
        }
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no {what} found (tried {}); run `make install` or pass --{what}",
        tried.join(", ")
    )
}

fn repo_build(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../build")
        .join(file)
}

fn sibling(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down (sandboxes keep running)");
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COCOON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let paths = VmmPaths {
        vmm: locate(
            "vmm",
            args.vmm.clone(),
            [Some(PathBuf::from(INSTALLED_VMM)), sibling("cocoon-vmm")]
                .into_iter()
                .flatten()
                .collect(),
        )?,
        kernel: locate(
            "kernel",
            args.kernel.clone(),
            vec![INSTALLED_KERNEL.into(), repo_build("vmlinux")],
        )?,
        initrd: locate(
            "initrd",
            args.initrd.clone(),
            vec![INSTALLED_INITRD.into(), repo_build("initramfs.img")],
        )?,
    };
    let limits = Limits::new(args.max_vcpus, args.max_memory_mib, args.max_disk_mib)
        .context("--max-vcpus, --max-memory-mib, --max-disk-mib")?;
    let token = match (&args.listen, &args.token_file) {
        (Some(_), Some(f)) => Some(server::read_token(f)?),
        (Some(_), None) => {
            bail!("--listen needs --token-file: TCP clients must send a bearer token")
        }
        (None, Some(_)) => bail!("--token-file is only used with --listen"),
        (None, None) => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(args, paths, limits, token))
}

async fn run(args: Args, paths: VmmPaths, limits: Limits, token: Option<String>) -> Result<()> {
    let mut cfg = ManagerConfig::new(args.state_dir.clone(), paths.clone());
    cfg.boot_timeout = Duration::from_secs(args.boot_timeout);
    cfg.stop_timeout = Duration::from_secs(args.stop_timeout);
    cfg.network_pool = args.network_pool;
    cfg.limits = limits;
    cfg.warm_pool = usize::from(args.warm_pool);
    cfg.vhost_net = vhost_net(args.net_vhost)?;
    let manager = SandboxManager::open(cfg)
        .await
        .with_context(|| format!("opening state directory {}", args.state_dir.display()))?;
    if let Some(ca) = &args.registry_ca {
        if !ca.is_file() {
            bail!("--registry-ca {} is not a file", ca.display());
        }
    }
    let registries = PullOptions {
        insecure: args.insecure_registries.clone(),
        ca_file: args.registry_ca.clone(),
        ..PullOptions::default()
    };
    let pool = manager.clone();
    let backend = RuntimeBackend::new(manager, args.busybox.clone()).with_registries(registries);
    let router = routes::router(backend);
    let unix = server::bind_unix(&args.socket).await?;
    tracing::info!(
        socket = %args.socket.display(),
        state_dir = %args.state_dir.display(),
        vmm = %paths.vmm.display(),
        kernel = %paths.kernel.display(),
        initrd = %paths.initrd.display(),
        max_vcpus = limits.max_vcpus(),
        max_memory_mib = limits.max_memory_mib(),
        max_disk_mib = limits.max_disk_mib(),
        "cocoond serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tcp = match (&args.listen, token) {
        (Some(addr), Some(token)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(%addr, "serving on TCP (bearer token required)");
            Some(tokio::spawn(server::serve_tcp(
                listener,
                server::with_token(router.clone(), token),
                stopped(),
            )))
        }
        _ => None,
    };
    let unix_task = tokio::spawn(server::serve_unix(unix, router, stopped()));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    // Long requests (a `wait` on a sandbox that runs for hours) would hold
    // a graceful shutdown forever: give them a moment, then go.
    let grace = Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, unix_task).await;
    if let Some(t) = tcp {
        let _ = tokio::time::timeout(grace, t).await;
    }
    pool.close_warm_pool().await;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
