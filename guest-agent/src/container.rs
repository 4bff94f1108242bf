//! One container: its root filesystem (the image disk read-only as the
//! overlay's lower layer, the scratch disk or a tmpfs as the upper), its
//! init (a re-executed agent that is PID 1 of the container's PID
//! namespace, owns its mount, UTS and IPC namespaces, and reaps orphans),
//! its cgroup, and the processes started in it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cocoon_proto::{ErrorBody, ErrorCode, ExitStatus, Process, Rootfs, Stats};

use crate::conn::Conn;
use crate::reaper::{decode, reaper, ExitSlot};
use crate::relay::Relay;
use crate::spawn::{self, Setup, Spec, SpecError, StartError};
use crate::sys::{self, check, cstr, mount, open, open_in_root};

const RUN_DIR: &str = "/run/cocoon/c";
const CGROUP_DIR: &str = "/sys/fs/cgroup/cocoon";
/// Execs remembered per container before finished ones are forgotten.
const MAX_EXECS: usize = 1024;

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

fn io_err(what: &str, e: std::io::Error) -> ErrorBody {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EACCES) | Some(libc::EPERM) => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    };
    err(code, format!("{what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A process started in a container.
pub struct Exec {
    pid: libc::pid_t,
    slot: Arc<ExitSlot>,
    pty: Option<File>,
    oom_kills_before: u64,
    /// stdout and stderr of a `keep_output` process.
    relays: [Option<Arc<Relay>>; 2],
}

/// A created container.
pub struct Container {
    id: String,
    init_pid: libc::pid_t,
    init_slot: Arc<ExitSlot>,
    execs: Mutex<HashMap<String, Arc<Exec>>>,
}

fn containers() -> &'static Mutex<HashMap<String, Arc<Container>>> {
    static C: OnceLock<Mutex<HashMap<String, Arc<Container>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The container named `id`.
pub fn get(id: &str) -> Result<Arc<Container>, ErrorBody> {
    lock(containers())
        .get(id)
        .cloned()
        .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id:?}")))
}

fn valid_name(what: &str, s: &str) -> Result<(), ErrorBody> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorCode::InvalidArgument,
            format!(
                "{what} {s:?} must be 1-64 characters of [A-Za-z0-9_.-], not starting with '.'"
            ),
        ))
    }
}

fn valid_device(what: &str, s: &str) -> Result<(), ErrorBody> {
    let rest = s.strip_prefix("/dev/").unwrap_or("");
    if rest.is_empty() || rest.contains('/') || rest.contains("..") {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("{what} {s:?} is not a device under /dev"),
        ));
    }
    Ok(())
}

/// Writes `content` to `path` inside the root `root`, never following a
/// link out of it.
fn write_in_root(root: &OwnedFd, path: &str, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let fd = open_in_root(
        root,
        path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        0o644,
    )?;
    File::from(fd).write_all(content.as_bytes())
}

/// Memory in the guest, in bytes.
fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn setup_cgroup(id: &str) -> Result<String, ErrorBody> {
    let _ = std::fs::create_dir_all(CGROUP_DIR);
    for ctl in ["+cpu", "+memory", "+pids"] {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", ctl);
        let _ = std::fs::write(format!("{CGROUP_DIR}/cgroup.subtree_control"), ctl);
    }
    let dir = format!("{CGROUP_DIR}/{id}");
    std::fs::create_dir(&dir).map_err(|e| io_err(&format!("creating cgroup {dir}"), e))?;
    // Room for the agent: the workload may use all memory but a reserve,
    // and a bounded number of tasks, so neither an allocation spike nor a
    // fork bomb can starve the agent.
    let total = mem_total();
    let reserve = 48 << 20;
    if total > reserve * 2 {
        let _ = std::fs::write(format!("{dir}/memory.max"), (total - reserve).to_string());
    }
    let pids = ((total >> 20) * 4).clamp(256, 32768);
    let _ = std::fs::write(format!("{dir}/pids.max"), pids.to_string());
    Ok(dir)
}

/// Creates a container from the attached disks and starts its init.
pub fn create(
    id: &str,
    rootfs: &Rootfs,
    hostname: Option<&str>,
    hosts: Option<&str>,
    resolv_conf: Option<&str>,
) -> Result<(), ErrorBody> {
    valid_name("container_id", id)?;
    valid_device("rootfs.image", &rootfs.image)?;
    if let Some(s) = &rootfs.scratch {
        valid_device("rootfs.scratch", s)?;
    }
    if !matches!(rootfs.image_fstype.as_str(), "erofs" | "ext4") {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!(
                "rootfs.image_fstype {:?} must be erofs or ext4",
                rootfs.image_fstype
            ),
        ));
    }
    let hostname = hostname.unwrap_or(id);
    if hostname.is_empty() || hostname.len() > 64 {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("hostname {hostname:?} must be 1-64 bytes"),
        ));
    }
    {
        let mut all = lock(containers());
        if all.contains_key(id) {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("container {id:?} exists"),
            ));
        }
        // Reserve the name while the slow part runs.
        all.insert(
            id.to_string(),
            Arc::new(Container {
                id: id.to_string(),
                init_pid: 0,
                init_slot: Arc::new(ExitSlot::default()),
                execs: Mutex::default(),
            }),
        );
    }
    match build(id, rootfs, hostname, hosts, resolv_conf) {
        Ok(c) => {
            lock(containers()).insert(id.to_string(), Arc::new(c));
            Ok(())
        }
        Err(e) => {
            lock(containers()).remove(id);
            Err(e)
        }
    }
}

fn build(
    id: &str,
    rootfs: &Rootfs,
    hostname: &str,
    hosts: Option<&str>,
    resolv_conf: Option<&str>,
) -> Result<Container, ErrorBody> {
    let base = format!("{RUN_DIR}/{id}");
    let (image, scratch, root) = (
        format!("{base}/image"),
        format!("{base}/scratch"),
        format!("{base}/rootfs"),
    );
    for d in [&image, &scratch, &root] {
        std::fs::create_dir_all(d).map_err(|e| io_err(&format!("creating {d}"), e))?;
    }
    let ro = libc::MS_RDONLY | libc::MS_NODEV;
    mount(&rootfs.image, &image, &rootfs.image_fstype, ro, "")
        .map_err(|e| err(ErrorCode::Io, format!("mounting the image disk: {e}")))?;
    match &rootfs.scratch {
        Some(dev) => mount(dev, &scratch, "ext4", libc::MS_NODEV, "")
            .map_err(|e| err(ErrorCode::Io, format!("mounting the scratch disk: {e}")))?,
        None => mount("tmpfs", &scratch, "tmpfs", libc::MS_NODEV, "mode=0755")
            .map_err(|e| err(ErrorCode::Io, format!("mounting a tmpfs scratch: {e}")))?,
    }
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{scratch}/{d}"))
            .map_err(|e| io_err("scratch layout", e))?;
    }
    mount(
        "overlay",
        &root,
        "overlay",
        0,
        &format!("lowerdir={image},upperdir={scratch}/upper,workdir={scratch}/work"),
    )
    .map_err(|e| err(ErrorCode::Io, format!("assembling the root: {e}")))?;
    let root_fd =
        open(&root, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| io_err("opening the root", e))?;
    let _ = std::fs::create_dir_all(format!("{root}/etc"));
    let default_hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    let files = [
        ("/etc/hostname", format!("{hostname}\n")),
        (
            "/etc/hosts",
            hosts.map(str::to_string).unwrap_or(default_hosts),
        ),
        (
            "/etc/resolv.conf",
            resolv_conf.map(str::to_string).unwrap_or_default(),
        ),
    ];
    for (path, content) in &files {
        write_in_root(&root_fd, path, content)
            .map_err(|e| io_err(&format!("writing {path}"), e))?;
    }
    let cgroup = setup_cgroup(id)?;
    let (pid, slot) = start_init(&root, hostname)?;
    if let Err(e) = std::fs::write(format!("{cgroup}/cgroup.procs"), pid.to_string()) {
        // SAFETY: signalling a child we just started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(io_err("moving the container init into its cgroup", e));
    }
    Ok(Container {
        id: id.to_string(),
        init_pid: pid,
        init_slot: slot,
        execs: Mutex::default(),
    })
}

/// Starts the container's init: this binary again, in a new PID namespace.
fn start_init(root: &str, hostname: &str) -> Result<(libc::pid_t, Arc<ExitSlot>), ErrorBody> {
    let (status_r, status_w) = sys::pipe().map_err(|e| io_err("pipe", e))?;
    let (root, hostname) = (root.to_string(), hostname.to_string());
    let t = std::thread::spawn(
        move || -> Result<(libc::pid_t, Arc<ExitSlot>), std::io::Error> {
            // SAFETY: affects only this thread's future children.
            check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?;
            let w = status_w.as_raw_fd();
            let mut cmd = std::process::Command::new("/proc/self/exe");
            cmd.arg0("cocoon-container-init")
                .args(["container-init", &root, &hostname])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: dup2 is async-signal-safe; it gives the child the status
            // pipe as fd 3 (without close-on-exec).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(w, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
            let reg = reaper().register();
            let child = cmd.spawn()?;
            let pid = child.id() as libc::pid_t;
            // The reaper collects it; std's handle must not wait.
            drop(child);
            Ok((pid, reg.watch(pid)))
        },
    );
    let (pid, slot) = t
        .join()
        .map_err(|_| err(ErrorCode::Internal, "init thread panicked"))?
        .map_err(|e| io_err("starting the container init", e))?;
    let mut status = String::new();
    let _ = File::from(status_r).read_to_string(&mut status);
    if status.trim() == "ok" {
        Ok((pid, slot))
    } else {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        slot.wait();
        Err(err(
            ErrorCode::Internal,
            format!("container init: {}", status.trim()),
        ))
    }
}

/// Entry of the re-executed agent that becomes the container's PID 1:
/// `container-init ROOT HOSTNAME`. Reports "ok" or the error on fd 3.
#[cfg_attr(test, allow(dead_code))]
pub fn init_main(args: &[String]) -> ! {
    use std::io::Write;
    // SAFETY: fd 3 is the status pipe our parent set up.
    let mut status = unsafe { File::from_raw_fd(3) };
    let result = match args {
        [root, hostname] => enter_root(root, hostname),
        _ => Err(std::io::Error::other("usage: container-init ROOT HOSTNAME")),
    };
    match result {
        Ok(()) => {
            let _ = status.write_all(b"ok\n");
        }
        Err(e) => {
            let _ = writeln!(status, "{e}");
            std::process::exit(1);
        }
    }
    drop(status);
    reap_orphans()
}

#[cfg_attr(test, allow(dead_code))]
fn enter_root(root: &str, hostname: &str) -> std::io::Result<()> {
    let step = std::cell::Cell::new("unshare");
    let r = (|| -> std::io::Result<()> {
        // SAFETY: unshare in this single-threaded process.
        check(unsafe {
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC)
        })?;
        mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        let at = |p: &str| format!("{root}{p}");
        let mkdir = |p: &str| std::fs::create_dir_all(at(p));
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        step.set("mounting /proc, /sys, /dev, /tmp");
        mkdir("/proc")?;
        mount("proc", &at("/proc"), "proc", nosuid_nodev_noexec, "")?;
        mkdir("/sys")?;
        mount(
            "sysfs",
            &at("/sys"),
            "sysfs",
            nosuid_nodev_noexec | libc::MS_RDONLY,
            "",
        )?;
        mkdir("/dev")?;
        mount(
            "tmpfs",
            &at("/dev"),
            "tmpfs",
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            "mode=755,size=65536k",
        )?;
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            let p = cstr(&at(&format!("/dev/{name}")))?;
            // SAFETY: a valid path; mknod creates a character device node.
            check(unsafe {
                libc::mknod(
                    p.as_ptr(),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(major, minor),
                )
            })?;
            // SAFETY: as above; the umask must not narrow the mode.
            check(unsafe { libc::chmod(p.as_ptr(), 0o666) })?;
        }
        mkdir("/dev/pts")?;
        mount(
            "devpts",
            &at("/dev/pts"),
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )?;
        mkdir("/dev/shm")?;
        mount(
            "shm",
            &at("/dev/shm"),
            "tmpfs",
            nosuid_nodev_noexec,
            "mode=1777,size=65536k",
        )?;
        for (link, target) in [
            ("/dev/ptmx", "pts/ptmx"),
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(target, at(link))?;
        }
        mkdir("/tmp")?;
        mount(
            "tmpfs",
            &at("/tmp"),
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        )?;
        std::env::set_current_dir(root)?;
        let dot = cstr(".")?;
        // SAFETY: pivot_root(".", ".") stacks the old root under the new one;
        // detaching it leaves only the container's tree.
        check(unsafe {
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int
        })?;
        sys::umount(".", libc::MNT_DETACH)?;
        std::env::set_current_dir("/")?;
        step.set("sethostname");
        // SAFETY: a valid buffer and its length.
        check(unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) })?;
        Ok(())
    })();
    r.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", step.get())))
}

#[cfg_attr(test, allow(dead_code))]
fn reap_orphans() -> ! {
    crate::sys::block_sigchld();
    // SAFETY: a local signal set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    };
    loop {
        // SAFETY: waitpid with a null status pointer is allowed.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) } > 0 {
        }
        // SAFETY: the set is valid.
        unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
    }
}

/// Which streams of an exec the host asked for.
pub struct ExecStreams {
    /// Host → process.
    pub stdin: Option<u32>,
    /// Process → host (the terminal's output when `terminal`).
    pub stdout: Option<u32>,
    /// Process → host.
    pub stderr: Option<u32>,
    /// The output outlives the connection (see [`crate::relay`]).
    pub keep_output: bool,
}

impl Container {
    fn proc_path(&self, rest: &str) -> String {
        format!("/proc/{}/{rest}", self.init_pid)
    }

    fn running(&self) -> Result<(), ErrorBody> {
        if self.init_pid == 0 {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("container {:?} is still being created", self.id),
            ));
        }
        if self.init_slot.try_get().is_some() {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("container {:?} has stopped", self.id),
            ));
        }
        Ok(())
    }

    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(format!("{CGROUP_DIR}/{}/memory.events", self.id))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Starts a process; its stdio is wired to the given streams.
    pub fn exec(
        &self,
        conn: &Arc<Conn>,
        exec_id: &str,
        p: &Process,
        streams: ExecStreams,
    ) -> Result<u32, ErrorBody> {
        self.running()?;
        valid_name("exec_id", exec_id)?;
        if let Some(old) = lock(&self.execs).get(exec_id) {
            if old.slot.try_get().is_none() {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("exec {exec_id:?} is running"),
                ));
            }
        }
        let ids: Vec<u32> = [streams.stdin, streams.stdout, streams.stderr]
            .into_iter()
            .flatten()
            .collect();
        for (i, s) in ids.iter().enumerate() {
            if ids[..i].contains(s) || conn.stream_in_use(*s) {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("stream {s} is already in use"),
                ));
            }
        }
        if p.terminal && streams.stderr.is_some() {
            return Err(err(
                ErrorCode::InvalidArgument,
                "a terminal process has no separate stderr stream",
            ));
        }
        let spec =
            Spec::new(p).map_err(|SpecError::Invalid(m)| err(ErrorCode::InvalidArgument, m))?;
        let ns = self.ns_fds()?;
        let cgroup_procs = open(
            &format!("{CGROUP_DIR}/{}/cgroup.procs", self.id),
            libc::O_WRONLY,
        )
        .map_err(|e| io_err("container cgroup", e))?;
        let null = || open("/dev/null", libc::O_RDWR).map_err(|e| io_err("/dev/null", e));
        // (child's end, our end) per stdio slot.
        let mut ours: [Option<File>; 3] = [None, None, None];
        let mut pty = None;
        let stdio: [OwnedFd; 3] = if p.terminal {
            let (master, slave) = self.open_pty(p.console_size)?;
            if streams.stdin.is_some() {
                ours[0] = Some(master.try_clone().map_err(|e| io_err("pty", e))?);
            }
            if streams.stdout.is_some() {
                ours[1] = Some(master.try_clone().map_err(|e| io_err("pty", e))?);
            }
            pty = Some(master);
            let s2 = slave.try_clone().map_err(|e| io_err("pty", e))?;
            let s3 = slave.try_clone().map_err(|e| io_err("pty", e))?;
            [slave, s2, s3]
        } else {
            let mut fds = Vec::with_capacity(3);
            for (i, s) in [streams.stdin, streams.stdout, streams.stderr]
                .iter()
                .enumerate()
            {
                if s.is_some() {
                    let (r, w) = sys::pipe().map_err(|e| io_err("pipe", e))?;
                    let (child, mine) = if i == 0 { (r, w) } else { (w, r) };
                    ours[i] = Some(File::from(mine));
                    fds.push(child);
                } else {
                    fds.push(null()?);
                }
            }
            let mut it = fds.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), Some(c)) => [a, b, c],
                _ => return Err(err(ErrorCode::Internal, "stdio setup")),
            }
        };
        let setup = Setup {
            stdio,
            terminal: p.terminal,
            ns,
            cgroup_procs,
        };
        let oom_kills_before = self.oom_kills();
        let (pid, slot) = spawn::start(spec, setup).map_err(|e| match e {
            StartError::NotFound(m) => err(ErrorCode::ExecutableNotFound, m),
            StartError::Rejected(m) => err(
                ErrorCode::InvalidArgument,
                format!("starting {:?}: {m}", p.args[0]),
            ),
            StartError::Failed(m) => err(
                ErrorCode::Internal,
                format!("starting {:?}: {m}", p.args[0]),
            ),
        })?;
        let [i, o, e] = ours;
        if let (Some(f), Some(s)) = (i, streams.stdin) {
            conn.pump_in(s, f, None);
        }
        let mut relays = [None, None];
        for (i, (f, s)) in [(o, streams.stdout), (e, streams.stderr)]
            .into_iter()
            .enumerate()
        {
            if let (Some(f), Some(s)) = (f, s) {
                if streams.keep_output {
                    relays[i] = Some(Relay::start(f, conn, s));
                } else {
                    conn.pump_out(s, f, None);
                }
            }
        }
        let mut execs = lock(&self.execs);
        // Finished processes are kept so a late Wait still answers, but
        // not without bound.
        if execs.len() >= MAX_EXECS {
            execs.retain(|_, e| e.slot.try_get().is_none());
        }
        execs.insert(
            exec_id.to_string(),
            Arc::new(Exec {
                pid,
                slot,
                pty,
                oom_kills_before,
                relays,
            }),
        );
        Ok(pid as u32)
    }

    /// Runs the agent's helper `args` inside the container with the given
    /// stdio; returns where its exit status lands.
    pub fn helper(&self, args: &[&str], stdio: [OwnedFd; 3]) -> Result<Arc<ExitSlot>, ErrorBody> {
        self.running()?;
        let spec = Spec::helper(args).map_err(|e| io_err("agent helper", e))?;
        let setup = Setup {
            stdio,
            terminal: false,
            ns: self.ns_fds()?,
            cgroup_procs: open(
                &format!("{CGROUP_DIR}/{}/cgroup.procs", self.id),
                libc::O_WRONLY,
            )
            .map_err(|e| io_err("container cgroup", e))?,
        };
        spawn::start(spec, setup)
            .map(|(_, slot)| slot)
            .map_err(|e| match e {
                StartError::NotFound(m) | StartError::Rejected(m) | StartError::Failed(m) => {
                    err(ErrorCode::Internal, format!("agent helper: {m}"))
                }
            })
    }

    fn ns_fds(&self) -> Result<[OwnedFd; 4], ErrorBody> {
        let [a, b, c, d] = ["pid", "mnt", "uts", "ipc"].map(|n| {
            open(&self.proc_path(&format!("ns/{n}")), libc::O_RDONLY)
                .map_err(|e| io_err("container namespaces", e))
        });
        Ok([a?, b?, c?, d?])
    }

    fn open_pty(
        &self,
        size: Option<cocoon_proto::ConsoleSize>,
    ) -> Result<(File, OwnedFd), ErrorBody> {
        // The container's own devpts, so the workload sees /dev/pts/N.
        let master = open(
            &self.proc_path("root/dev/pts/ptmx"),
            libc::O_RDWR | libc::O_NOCTTY,
        )
        .map_err(|e| io_err("opening the container's ptmx", e))?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int from the pointer.
        check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })
            .map_err(|e| io_err("unlockpt", e))?;
        // SAFETY: TIOCGPTPEER returns a new descriptor for the slave.
        let slave = check(unsafe {
            libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| io_err("opening the pty slave", e))?;
        // SAFETY: a new descriptor we own.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let master = File::from(master);
        if let Some(s) = size {
            set_winsize(&master, s.rows, s.cols)?;
        }
        Ok((master, slave))
    }

    fn exec_of(&self, exec_id: &str) -> Result<Arc<Exec>, ErrorBody> {
        lock(&self.execs).get(exec_id).cloned().ok_or_else(|| {
            err(
                ErrorCode::NotFound,
                format!("no exec {exec_id:?} in container {:?}", self.id),
            )
        })
    }

    /// Blocks until the process ends.
    pub fn wait(&self, exec_id: &str) -> Result<ExitStatus, ErrorBody> {
        let e = self.exec_of(exec_id)?;
        let (code, signal) = decode(e.slot.wait());
        let oom_killed = signal == Some(libc::SIGKILL) && self.oom_kills() > e.oom_kills_before;
        Ok(ExitStatus {
            code,
            signal,
            oom_killed,
        })
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, exec_id: &str, signal: i32) -> Result<(), ErrorBody> {
        if !(1..=64).contains(&signal) {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("signal {signal} is out of range"),
            ));
        }
        let e = self.exec_of(exec_id)?;
        if e.slot.try_get().is_some() {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("exec {exec_id:?} has exited"),
            ));
        }
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        check(unsafe { libc::kill(e.pid, signal) }).map_err(|e| io_err("kill", e))?;
        Ok(())
    }

    /// Sends the output of a `keep_output` process to streams of `conn`.
    pub fn attach(
        &self,
        conn: &Arc<Conn>,
        exec_id: &str,
        streams: [(Option<u32>, Option<u64>); 2],
    ) -> Result<(), ErrorBody> {
        let e = self.exec_of(exec_id)?;
        if e.relays.iter().all(Option::is_none) {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("exec {exec_id:?} was not started with keep_output"),
            ));
        }
        for (relay, (stream, from)) in e.relays.iter().zip(streams) {
            if let (Some(r), Some(s)) = (relay, stream) {
                r.attach(conn, s, from)?;
            }
        }
        Ok(())
    }

    /// Resizes the process's terminal.
    pub fn resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), ErrorBody> {
        let e = self.exec_of(exec_id)?;
        let pty = e.pty.as_ref().ok_or_else(|| {
            err(
                ErrorCode::InvalidArgument,
                format!("exec {exec_id:?} has no terminal"),
            )
        })?;
        set_winsize(pty, rows, cols)
    }

    /// The container's root as seen from inside (with its /tmp and /dev).
    pub fn root_fd(&self) -> Result<OwnedFd, ErrorBody> {
        self.running()?;
        open(&self.proc_path("root"), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| io_err("container root", e))
    }

    /// CPU, memory and task counts of the container's cgroup.
    pub fn stats(&self) -> Result<Stats, ErrorBody> {
        let dir = format!("{CGROUP_DIR}/{}", self.id);
        let read =
            |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).map_err(|e| io_err(f, e));
        let num = |s: &str| s.trim().parse::<u64>().ok();
        let cpu_usec = read("cpu.stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec ").and_then(num))
            })
            .unwrap_or(0);
        Ok(Stats {
            cpu_usec,
            memory_bytes: num(&read("memory.current")?).unwrap_or(0),
            memory_max_bytes: read("memory.max").ok().and_then(|s| num(&s)),
            pids: num(&read("pids.current")?).unwrap_or(0),
        })
    }

    /// Kills every process of the container (its PID namespace dies with
    /// its init) and unmounts its root.
    pub fn destroy(&self) {
        if self.init_pid > 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.init_pid, libc::SIGKILL) };
            self.init_slot.wait();
        }
        for e in lock(&self.execs).values() {
            if e.slot.try_get().is_none() {
                // SAFETY: as above.
                unsafe { libc::kill(e.pid, libc::SIGKILL) };
            }
        }
        let base = format!("{RUN_DIR}/{}", self.id);
        for m in ["rootfs", "scratch", "image"] {
            let _ = sys::umount(&format!("{base}/{m}"), libc::MNT_DETACH);
        }
    }
}

fn set_winsize(pty: &File, rows: u16, cols: u16) -> Result<(), ErrorBody> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
    check(unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) })
        .map_err(|e| io_err("resize", e))?;
    Ok(())
}

/// Stops every container, for shutdown.
pub fn destroy_all() {
    let all: Vec<_> = lock(containers()).drain().map(|(_, c)| c).collect();
    for c in all {
        c.destroy();
    }
}
