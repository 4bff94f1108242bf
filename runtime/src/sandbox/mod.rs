//! The sandbox lifecycle: an image becomes a running micro-VM with the
//! image's process as its init, and later goes away leaving nothing behind.
//!
//! [`SandboxManager`] is the entry point for the daemon (and later the
//! containerd shim). A sandbox moves `creating → running → stopped →
//! deleted`, or to `failed` with a reason; its [`SandboxRecord`] is kept in
//! an embedded database ([`db`], redb) so that a restarted daemon takes its
//! running VMs over again. Each VM is a `cocoon-vmm` process of its own
//! ([`vmm`]) that does not die with the daemon.
//!
//! Processes can also run with their stdio streamed both ways
//! ([`SandboxManager::exec_stream`], [`SandboxManager::attach`] to the
//! init, [`stream`]), and the init's log can be followed as it grows. Files
//! are copied in and out ([`files`]).
//!
//! Networking (`network: default`) is [`crate::network`]'s; the manager
//! allocates, sets up and releases it with the sandbox's lifecycle.
//!
//! Not here yet: the VMM jail, cgroups for the VMM process.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use cocoon_runtime::sandbox::{ExecSpec, ManagerConfig, SandboxManager, SandboxSpec, VmmPaths};
//!
//! # async fn demo() -> Result<(), cocoon_runtime::sandbox::SandboxError> {
//! let paths = VmmPaths {
//!     vmm: "/usr/local/bin/cocoon-vmm".into(),
//!     kernel: "/usr/local/share/cocoon/vmlinux".into(),
//!     initrd: "/usr/local/share/cocoon/initramfs.img".into(),
//! };
//! let manager = SandboxManager::open(ManagerConfig::new(PathBuf::from("/var/lib/cocoon"), paths)).await?;
//! let mut spec = SandboxSpec::new("busybox");
//! spec.cmd = vec!["sleep".into(), "3600".into()];
//! let sandbox = manager.create(spec).await?;
//! let out = manager.exec(&sandbox.id, ExecSpec::new(vec!["uname".into(), "-r".into()])).await?;
//! println!("{}", out.stdout);
//! manager.delete(&sandbox.id).await?;
//! # Ok(())
//! # }
//! ```

pub mod db;
pub mod files;
pub mod logs;
mod manager;
pub mod pool;
pub mod record;
pub mod spec;
pub mod stream;
pub mod vmm;

pub use files::{FileError, FileErrorKind};
pub use logs::LogStream;
pub use manager::{
    ErrorKind, ExecOutput, ListFilter, ManagerConfig, SandboxError, SandboxManager, CONTAINER_ID,
    INIT_EXEC_ID, MAX_EXEC_OUTPUT,
};
pub use record::{ExitInfo, SandboxRecord, SandboxState};
pub use spec::{ExecSpec, ExecStreamSpec, Limits, Network, SandboxSpec, SpecError};
pub use stream::{Control, Ending, OutputChunk, ProcessIo};
pub use vmm::VmmPaths;
