//! Starting a process inside a container: fork from a thread that has
//! entered the container's PID namespace, then in the child (single
//! threaded, so only system calls on data prepared before the fork) join
//! the container's cgroup and namespaces, set up stdio, working directory,
//! limits, capabilities and credentials, and exec. Failures before exec
//! come back through a close-on-exec pipe as (stage, errno).

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::reaper::{reaper, ExitSlot};
use crate::sys::{check, cstr};

/// Linux capability numbers by name (as in OCI and `capabilities(7)`).
const CAPS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// The OCI runtime spec's default capability set (runc's default config).
const OCI_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Resource names the OCI spec allows in `rlimits`.
fn rlimit_resource(kind: &str) -> Option<u32> {
    Some(match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Why a spec was refused before anything started.
#[derive(Debug)]
pub enum SpecError {
    /// A field is invalid; the message says which.
    Invalid(String),
}

/// Everything the child needs, prepared before fork.
pub struct Spec {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    rlimits: Vec<(u32, libc::rlimit)>,
    no_new_privs: bool,
    keep_caps: u64,
    /// For the agent's own helpers: the binary to run, opened before the
    /// fork, so the container's filesystem cannot substitute another.
    exec_fd: Option<OwnedFd>,
    /// The program as the user named it, for error messages.
    pub program: String,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Spec {
    /// Validates a protocol process description.
    pub fn new(p: &cocoon_proto::Process) -> Result<Spec, SpecError> {
        let bad = |m: String| SpecError::Invalid(m);
        let program = p
            .args
            .first()
            .cloned()
            .ok_or_else(|| bad("process.args is empty".into()))?;
        if program.is_empty() {
            return Err(bad("process.args[0] is empty".into()));
        }
        if !p.cwd.starts_with('/') {
            return Err(bad(format!("process.cwd {:?} is not absolute", p.cwd)));
        }
        let c = |s: &str| cstr(s).map_err(|e| bad(e.to_string()));
        let mut env = p.env.clone();
        for e in &env {
            if !e.contains('=') {
                return Err(bad(format!("env entry {e:?} has no '='")));
            }
        }
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let candidates = if program.contains('/') {
            vec![c(&program)?]
        } else {
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| c(&format!("{}/{program}", d.trim_end_matches('/'))))
                .collect::<Result<_, _>>()?
        };
        let mut rlimits = Vec::new();
        for r in &p.rlimits {
            let res = rlimit_resource(&r.kind)
                .ok_or_else(|| bad(format!("unknown rlimit {:?}", r.kind)))?;
            if r.soft > r.hard {
                return Err(bad(format!(
                    "rlimit {}: soft {} above hard {}",
                    r.kind, r.soft, r.hard
                )));
            }
            rlimits.push((
                res,
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            ));
        }
        let names: Vec<&str> = match &p.capabilities {
            Some(v) => v.iter().map(String::as_str).collect(),
            None => OCI_DEFAULT_CAPS.to_vec(),
        };
        let mut keep_caps = 0u64;
        for n in names {
            let (_, bit) = CAPS
                .iter()
                .find(|(name, _)| *name == n)
                .ok_or_else(|| bad(format!("unknown capability {n:?}")))?;
            keep_caps |= 1 << bit;
        }
        Ok(Spec {
            candidates,
            argv: p.args.iter().map(|a| c(a)).collect::<Result<_, _>>()?,
            envp: env.iter().map(|e| c(e)).collect::<Result<_, _>>()?,
            cwd: c(&p.cwd)?,
            uid: p.user.uid,
            gid: p.user.gid,
            groups: p.user.additional_gids.clone(),
            rlimits,
            no_new_privs: p.no_new_privileges,
            keep_caps,
            exec_fd: None,
            program,
        })
    }

    /// The agent binary itself, run as root with every capability inside
    /// the container (`cocoon-agent ARGS...`), for work that must resolve
    /// paths as the container sees them (tar copies).
    pub fn helper(args: &[&str]) -> io::Result<Spec> {
        let exe = crate::sys::open("/proc/self/exe", libc::O_RDONLY)?;
        let argv = std::iter::once("cocoon-agent")
            .chain(args.iter().copied())
            .map(cstr)
            .collect::<io::Result<_>>()?;
        Ok(Spec {
            candidates: Vec::new(),
            argv,
            envp: vec![cstr(&format!("PATH={DEFAULT_PATH}"))?],
            cwd: cstr("/")?,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            rlimits: Vec::new(),
            no_new_privs: true,
            keep_caps: u64::MAX,
            exec_fd: Some(exe),
            program: "cocoon-agent".into(),
        })
    }
}

/// The child's stdio and the container it joins.
pub struct Setup {
    /// Descriptors for the child's 0, 1, 2 (a pty slave three times for a
    /// terminal).
    pub stdio: [OwnedFd; 3],
    /// Whether fd 0 is a terminal that becomes the controlling tty.
    pub terminal: bool,
    /// Namespace descriptors of the container's init: pid, mnt, uts, ipc.
    pub ns: [OwnedFd; 4],
    /// The container cgroup's `cgroup.procs`, opened for writing.
    pub cgroup_procs: OwnedFd,
}

/// Why a start failed.
#[derive(Debug)]
pub enum StartError {
    /// The program was not found in any candidate path.
    NotFound(String),
    /// The process cannot start as asked: its working directory is
    /// missing or not a directory, or the program cannot be executed. The
    /// asker's mistake, not the agent's.
    Rejected(String),
    /// Another step failed.
    Failed(String),
}

const STAGES: &[&str] = &[
    "?",
    "joining the cgroup",
    "entering the namespaces",
    "setting up stdio",
    "changing to the working directory",
    "setting rlimits",
    "dropping capabilities",
    "setting groups",
    "setting the gid",
    "setting the uid",
    "setting no_new_privs",
    "executing",
];
/// Index in [`STAGES`] of the chdir.
const STAGE_CHDIR: usize = 4;
/// Index in [`STAGES`] of the exec.
const STAGE_EXEC: usize = STAGES.len() - 1;

/// Starts the process; returns its pid (in the agent's namespace) and
/// where its exit status will land.
pub fn start(spec: Spec, setup: Setup) -> Result<(libc::pid_t, Arc<ExitSlot>), StartError> {
    let program = spec.program.clone();
    let (err_r, err_w) =
        crate::sys::pipe().map_err(|e| StartError::Failed(format!("pipe: {e}")))?;
    // The fork runs on a fresh thread: entering a PID namespace only
    // changes where that thread's future children go.
    let forker = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || -> io::Result<(libc::pid_t, Arc<ExitSlot>)> {
            // SAFETY: setns on a namespace descriptor we own.
            check(unsafe { libc::setns(setup.ns[0].as_raw_fd(), libc::CLONE_NEWPID) })?;
            let argv: Vec<*const libc::c_char> = spec
                .argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            let envp: Vec<*const libc::c_char> = spec
                .envp
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            let reg = reaper().register();
            // SAFETY: the child only makes system calls on memory prepared
            // above (no allocation, no locks) and ends in execve or _exit.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            if pid == 0 {
                // SAFETY: see above; `child` never returns.
                unsafe { child(&spec, &setup, &argv, &envp, err_w.as_raw_fd()) }
            }
            Ok((pid, reg.watch(pid)))
        })
        .map_err(|e| StartError::Failed(format!("thread: {e}")))?;
    let started = forker
        .join()
        .map_err(|_| StartError::Failed("fork thread panicked".into()));
    // Our copy of the write end must be gone before reading, or the read
    // would never see EOF. The thread owned it and has ended.
    let (pid, slot) = started?.map_err(|e| StartError::Failed(format!("fork: {e}")))?;
    let mut err_r = std::fs::File::from(err_r);
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        match err_r.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok((pid, slot));
    }
    // The child failed before exec and is exiting; collect it.
    slot.wait();
    let stage = STAGES.get(usize::from(report[0])).copied().unwrap_or("?");
    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
    let err = io::Error::from_raw_os_error(errno);
    let asked_for = |errnos: &[i32]| errnos.contains(&errno);
    match usize::from(report[0]) {
        STAGE_EXEC if asked_for(&[libc::ENOENT, libc::ENOTDIR]) => Err(StartError::NotFound(
            format!("executable {program:?} not found in the container: {err}"),
        )),
        STAGE_CHDIR
            if asked_for(&[
                libc::ENOENT,
                libc::ENOTDIR,
                libc::EACCES,
                libc::ELOOP,
                libc::ENAMETOOLONG,
            ]) =>
        {
            Err(StartError::Rejected(format!("{stage}: {err}")))
        }
        STAGE_EXEC
            if asked_for(&[
                libc::EACCES,
                libc::ENOEXEC,
                libc::EISDIR,
                libc::ELOOP,
                libc::ENAMETOOLONG,
            ]) =>
        {
            Err(StartError::Rejected(format!("{stage}: {err}")))
        }
        _ => Err(StartError::Failed(format!("{stage}: {err}"))),
    }
}

/// The forked child. Never returns.
///
/// # Safety
/// Must run in a freshly forked child of a multithreaded process: only
/// async-signal-safe calls on memory prepared before the fork.
unsafe fn child(
    spec: &Spec,
    setup: &Setup,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    err_fd: libc::c_int,
) -> ! {
    // SAFETY: the caller guarantees a fresh fork child; every call below
    // is a system call on descriptors and memory prepared before the fork.
    unsafe {
        let fail = |stage: u8| -> ! {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; 5];
            msg[0] = stage;
            msg[1..].copy_from_slice(&errno.to_le_bytes());
            libc::write(err_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        };
        // Signals: nothing blocked, default dispositions (the agent ignores
        // SIGPIPE and blocks SIGCHLD; neither may leak into the workload).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // The agent is shielded from the OOM killer; the workload is not.
        let adj = c"/proc/self/oom_score_adj";
        let fd = libc::open(adj.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
        if libc::write(setup.cgroup_procs.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
            fail(1);
        }
        for (fd, flag) in
            setup.ns[1..]
                .iter()
                .zip([libc::CLONE_NEWNS, libc::CLONE_NEWUTS, libc::CLONE_NEWIPC])
        {
            if libc::setns(fd.as_raw_fd(), flag) < 0 {
                fail(2);
            }
        }
        if libc::setsid() < 0 {
            fail(3);
        }
        if setup.terminal && libc::ioctl(setup.stdio[0].as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            fail(3);
        }
        for (i, fd) in setup.stdio.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), i as libc::c_int) < 0 {
                fail(3);
            }
        }
        // Nothing else of the agent's may reach the workload.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            fail(3);
        }
        if libc::chdir(spec.cwd.as_ptr()) < 0 {
            fail(4);
        }
        for (res, lim) in &spec.rlimits {
            if libc::setrlimit(*res as _, lim) < 0 {
                fail(5);
            }
        }
        for (_, bit) in CAPS {
            if spec.keep_caps & (1 << bit) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, *bit as libc::c_ulong, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                fail(6);
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::setgroups(spec.groups.len(), spec.groups.as_ptr()) < 0 {
            fail(7);
        }
        if libc::setgid(spec.gid) < 0 {
            fail(8);
        }
        if libc::setuid(spec.uid) < 0 {
            fail(9);
        }
        if spec.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(10);
        }
        // Search like execvp, but with the container's PATH: remember the most
        // telling error (EACCES over ENOENT).
        let mut saved = libc::ENOENT;
        if let Some(fd) = &spec.exec_fd {
            libc::fexecve(fd.as_raw_fd(), argv.as_ptr(), envp.as_ptr());
            saved = *libc::__errno_location();
        }
        for path in &spec.candidates {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = *libc::__errno_location();
            if e != libc::ENOENT && e != libc::ENOTDIR {
                saved = e;
            }
        }
        *libc::__errno_location() = saved;
        fail(11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_proto::{Process, Rlimit, User};

    fn process(args: &[&str]) -> Process {
        Process {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/a:/b/".into(), "X=1".into()],
            cwd: "/".into(),
            user: User::default(),
            rlimits: Vec::new(),
            terminal: false,
            console_size: None,
            no_new_privileges: false,
            capabilities: None,
        }
    }

    fn refused(p: &Process) -> String {
        match Spec::new(p) {
            Err(SpecError::Invalid(m)) => m,
            Ok(_) => panic!("accepted {p:?}"),
        }
    }

    #[test]
    fn a_bare_name_is_searched_in_the_processes_path() {
        let s = Spec::new(&process(&["sh", "-c", "true"])).unwrap();
        let c: Vec<_> = s
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap().to_string())
            .collect();
        assert_eq!(c, ["/a/sh", "/b/sh"]);
        let s = Spec::new(&process(&["/bin/true"])).unwrap();
        assert_eq!(s.candidates.len(), 1);
    }

    #[test]
    fn the_oci_default_capabilities_apply_unless_others_are_asked_for() {
        let s = Spec::new(&process(&["x"])).unwrap();
        assert_ne!(s.keep_caps & (1 << 0), 0, "CAP_CHOWN kept");
        assert_eq!(s.keep_caps & (1 << 21), 0, "CAP_SYS_ADMIN dropped");
        let mut p = process(&["x"]);
        p.capabilities = Some(vec!["CAP_SYS_ADMIN".into()]);
        assert_eq!(Spec::new(&p).unwrap().keep_caps, 1 << 21);
    }

    #[test]
    fn invalid_processes_are_refused_with_the_field_named() {
        assert!(refused(&process(&[])).contains("args"));
        assert!(refused(&process(&[""])).contains("args[0]"));
        let mut p = process(&["x"]);
        p.cwd = "tmp".into();
        assert!(refused(&p).contains("cwd"));
        let mut p = process(&["x"]);
        p.env.push("NOEQUALS".into());
        assert!(refused(&p).contains("NOEQUALS"));
        let mut p = process(&["x"]);
        p.rlimits.push(Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            soft: 1,
            hard: 1,
        });
        assert!(refused(&p).contains("RLIMIT_BOGUS"));
        let mut p = process(&["x"]);
        p.rlimits.push(Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 2,
            hard: 1,
        });
        assert!(refused(&p).contains("soft"));
        let mut p = process(&["x"]);
        p.capabilities = Some(vec!["CAP_BOGUS".into()]);
        assert!(refused(&p).contains("CAP_BOGUS"));
        let mut p = process(&["a\0b"]);
        p.args.push("y".into());
        assert!(refused(&p).contains("NUL"));
    }
}
