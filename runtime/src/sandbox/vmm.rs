//! Starting, watching and killing a sandbox's `cocoon-vmm` process.
//!
//! The VMM runs in its own session (`setsid`) with its output in a file, so
//! it outlives the daemon that started it: a daemon restart finds it again
//! by pid and start time ([`VmmProcess::adopt`]). A process started here is
//! reaped here; an adopted one is not this process's child, so its end is
//! noticed by polling `/proc`.
//!
//! A networked sandbox's VMM is started inside the sandbox's network
//! namespace (`setns` between fork and exec), where its TAP is: the VMM
//! opens the TAP by name and knows nothing of namespaces.
//!
//! This module does not jail the VMM (other namespaces, chroot, an
//! unprivileged user): that comes with the jail work. The VMM installs its
//! own seccomp filters (`docs/vmm.md`).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;

use super::record::VmmIdentity;
use crate::network::SandboxNetwork;

/// How often an adopted VMM's `/proc` entry is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(250);
/// The nice value of a VMM booting in the background.
const BACKGROUND_NICE: i32 = 19;

/// Where the VMM binary, the guest kernel and the agent initramfs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmPaths {
    /// `cocoon-vmm`.
    pub vmm: PathBuf,
    /// The guest kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// The initramfs holding the agent.
    pub initrd: PathBuf,
}

/// One VM to start.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u64,
    /// The image's read-only root disk (becomes `/dev/vda`).
    pub root_disk: &'a Path,
    /// The sandbox's scratch disk (becomes `/dev/vdb`).
    pub scratch_disk: &'a Path,
    /// The hybrid vsock Unix socket the VMM creates.
    pub vsock: &'a Path,
    /// Where the VMM's stdout (the guest console) and stderr go.
    pub log: &'a Path,
    /// The sandbox's network (`network: default`): the VMM runs in its
    /// namespace with a NIC on its TAP, and the guest learns its address
    /// from the kernel command line. `None`: no NIC.
    pub network: Option<&'a SandboxNetwork>,
    /// The NIC (if any) moves frames with the host kernel's vhost-net.
    pub vhost_net: bool,
    /// Boot at the lowest CPU priority (a warm-pool VM nobody waits for
    /// yet; [`VmmProcess::to_foreground`] undoes it).
    pub background: bool,
}

/// The command line a launch runs (without the program).
pub fn vmm_args(paths: &VmmPaths, l: &Launch<'_>) -> Vec<String> {
    let mut cmdline = String::from("quiet cocoon.mode=serve");
    let mut args = Vec::new();
    if let Some(net) = l.network {
        cmdline.push(' ');
        cmdline.push_str(&net.kernel_param());
        args.push("--net".into());
        args.push(net.vmm_net_arg(l.vhost_net));
    }
    let mut all: Vec<String> = vec![
        "--kernel".into(),
        paths.kernel.display().to_string(),
        "--initrd".into(),
        paths.initrd.display().to_string(),
        "--vcpus".into(),
        l.vcpus.to_string(),
        "--memory-mib".into(),
        l.memory_mib.to_string(),
        "--disk".into(),
        format!("{},ro,id=image", l.root_disk.display()),
        "--disk".into(),
        format!("{},id=scratch", l.scratch_disk.display()),
        "--vsock".into(),
        l.vsock.display().to_string(),
        "--cmdline".into(),
        cmdline,
        // The console costs a VM exit per byte; with `quiet` the guest
        // prints little, and it is what explains a failed boot.
        "--console".into(),
    ];
    all.append(&mut args);
    all
}

/// A running (or ended) VMM process.
#[derive(Debug, Clone)]
pub struct VmmProcess {
    id: VmmIdentity,
    exited: watch::Receiver<Option<String>>,
}

impl VmmProcess {
    /// Starts the VMM in its own session with stdin from `/dev/null` and
    /// stdout and stderr appended to `launch.log`, inside the sandbox's
    /// network namespace when it has one. Needs a tokio runtime (a task
    /// reaps it).
    pub fn spawn(paths: &VmmPaths, launch: &Launch<'_>) -> io::Result<VmmProcess> {
        let log = File::options().create(true).append(true).open(launch.log)?;
        // Opened here, before the fork (close-on-exec, so the VMM does not
        // inherit it): the child may only make system calls.
        let netns = launch
            .network
            .map(|n| {
                let p = n.netns_path();
                File::open(&p).map_err(|e| {
                    io::Error::new(e.kind(), format!("network namespace {}: {e}", p.display()))
                })
            })
            .transpose()?;
        let mut cmd = tokio::process::Command::new(&paths.vmm);
        cmd.args(vmm_args(paths, launch))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let background = launch.background;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the setsid, setpriority and setns system calls, which are
        // async-signal-safe; it reads copied values and allocates
        // nothing. The descriptor stays open in the parent (`netns` lives
        // until after spawn returns), so it is valid in the child.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::setsid().map_err(io::Error::from)?;
                if background {
                    // Every thread the VMM starts inherits it.
                    rustix::process::setpriority_process(None, BACKGROUND_NICE)
                        .map_err(io::Error::from)?;
                }
                if let Some(fd) = netns_fd {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::thread::move_into_link_name_space(
                        fd,
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(netns);
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the VMM exited before its pid was read"))?;
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        // Not reaped yet (only the task below waits), so the pid is ours.
        let start_time = proc_start_time(pid).unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let reason = match child.wait().await {
                Ok(s) => describe_exit(s),
                Err(e) => format!("could not be waited for: {e}"),
            };
            let _ = tx.send(Some(reason));
        });
        Ok(VmmProcess {
            id: VmmIdentity { pid, start_time },
            exited: rx,
        })
    }

    /// Finds a VMM started by an earlier daemon. `None` when that process
    /// is gone (or its pid now belongs to another process).
    pub fn adopt(id: VmmIdentity) -> Option<VmmProcess> {
        if !same_process_alive(id) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            while same_process_alive(id) {
                tokio::select! {
                    _ = tokio::time::sleep(ADOPTED_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
            let _ = tx.send(Some(
                "exited (status unknown: started by an earlier cocoond)".into(),
            ));
        });
        Some(VmmProcess { id, exited: rx })
    }

    /// Gives every thread of a VMM started with `background` the normal
    /// CPU priority again (a warm VM taken by a sandbox). Needs
    /// CAP_SYS_NICE; tries every thread and returns the first failure.
    pub fn to_foreground(&self) -> io::Result<()> {
        let tasks = PathBuf::from(format!("/proc/{}/task", self.id.pid));
        let mut first = Ok(());
        for t in fs::read_dir(&tasks)?.flatten() {
            let tid = t.file_name().to_string_lossy().parse::<i32>().ok();
            if let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) {
                match rustix::process::setpriority_process(Some(tid), 0) {
                    // The thread has just exited.
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => {
                        if first.is_ok() {
                            first = Err(io::Error::from(e));
                        }
                    }
                }
            }
        }
        first
    }

    /// Its pid and start time.
    pub fn identity(&self) -> VmmIdentity {
        self.id
    }

    /// How it ended, if it has.
    pub fn exit_reason(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Waits for it to end; returns how.
    pub async fn wait(&self) -> String {
        let mut rx = self.exited.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "exited (watcher gone)".into(),
        };
        reason
    }

    /// Waits up to `limit` for it to end.
    pub async fn wait_timeout(&self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    /// Sends SIGKILL unless it has already ended.
    pub fn kill(&self) {
        if self.exit_reason().is_some() || !same_process_alive(self.id) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.id.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Kills it and waits (bounded) until it is gone.
    pub async fn kill_and_wait(&self, limit: Duration) -> Option<String> {
        self.kill();
        self.wait_timeout(limit).await
    }
}

/// Kills the process `id` names if it still exists (used for records whose
/// VMM could not be adopted as running but might still be alive).
pub fn kill_identity(id: VmmIdentity) {
    if !same_process_alive(id) {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(id.pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(0), _) => "exited with status 0 (guest powered off)".into(),
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended: {s}"),
    }
}

/// Whether `id`'s process exists, is not a zombie, and is the same process
/// (same start time).
pub fn same_process_alive(id: VmmIdentity) -> bool {
    match read_stat(id.pid) {
        Some((state, start)) => state != 'Z' && state != 'X' && start == id.start_time,
        None => false,
    }
}

/// A process's start time (`/proc/PID/stat` field 22).
pub fn proc_start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, t)| t)
}

fn read_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// State and start time from a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 more fields on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let line =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id() as i32;
        let start = proc_start_time(pid).unwrap_or_default();
        assert!(same_process_alive(VmmIdentity {
            pid,
            start_time: start
        }));
        assert!(!same_process_alive(VmmIdentity {
            pid,
            start_time: start + 1
        }));
    }

    #[test]
    fn args_name_both_disks_and_the_socket() {
        let paths = VmmPaths {
            vmm: "/v".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let a = vmm_args(
            &paths,
            &Launch {
                vcpus: 2,
                memory_mib: 256,
                root_disk: Path::new("/r.erofs"),
                scratch_disk: Path::new("/s.ext4"),
                vsock: Path::new("/v.sock"),
                log: Path::new("/l"),
                network: None,
                vhost_net: false,
                background: false,
            },
        );
        let joined = a.join(" ");
        assert!(joined.contains("--disk /r.erofs,ro,id=image --disk /s.ext4,id=scratch"));
        assert!(joined.contains("--vsock /v.sock"));
        assert!(joined.contains("--vcpus 2 --memory-mib 256"));
        assert!(!joined.contains("--net"), "no NIC without a network");
        assert!(!joined.contains("cocoon.net="));
    }

    #[test]
    fn args_of_a_networked_sandbox_add_the_nic_and_its_address() {
        let paths = VmmPaths {
            vmm: "/v".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let net = crate::network::HostNetwork::new(crate::network::Pool::DEFAULT)
            .allocate("0123456789ab")
            .unwrap_or_else(|e| panic!("{e}"));
        let a = vmm_args(
            &paths,
            &Launch {
                vcpus: 1,
                memory_mib: 128,
                root_disk: Path::new("/r"),
                scratch_disk: Path::new("/s"),
                vsock: Path::new("/v.sock"),
                log: Path::new("/l"),
                network: Some(&net),
                vhost_net: true,
                background: false,
            },
        );
        let at = a.iter().position(|x| x == "--net").unwrap_or(usize::MAX);
        assert_eq!(
            a.get(at + 1).map(String::as_str),
            Some("tap=tap0,mac=02:23:45:67:89:ab,vhost=on")
        );
        let cmdline = a
            .iter()
            .position(|x| x == "--cmdline")
            .and_then(|i| a.get(i + 1))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            cmdline,
            "quiet cocoon.mode=serve cocoon.net=10.200.0.2/30,10.200.0.1"
        );
    }
}
