//! The JSON messages carried in `Hello`, `Request`, `Response`, `Event` and
//! `Error` frames.
//!
//! These are plain serde types shared by the host and the agent. Enums are
//! internally tagged with a snake_case `"type"` field; structs refuse
//! unknown fields so a typo on one side fails loudly instead of being
//! silently ignored. Forward compatibility comes from the version handshake
//! ([`Hello`]), not from ignoring fields. The one exception is
//! [`ErrorCode`], which has an [`ErrorCode::Unknown`] fallback so that a
//! newer agent's error codes still reach the host as errors.
//!
//! This module does no validation beyond what serde checks (for example it
//! does not check that `terminal` and `stderr` exclude each other); that is
//! the receiver's job, which answers [`ErrorCode::InvalidArgument`].

use serde::{Deserialize, Serialize};

/// Bytes of each output stream an agent keeps for a process started with
/// `keep_output` while no host is attached (older output is dropped).
pub const KEPT_OUTPUT: usize = 1 << 20;

fn is_false(b: &bool) -> bool {
    !*b
}

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Payload of a `Hello` frame: the first frame in each direction.
///
/// The host sends its supported range (`min_version..=version`); the agent
/// answers with `version` set to the version it chose (and its own
/// `min_version`), or with an `Error` frame carrying
/// [`ErrorCode::UnsupportedVersion`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Host: the newest version it speaks. Agent: the version chosen.
    pub version: u32,
    /// The oldest version the sender speaks.
    pub min_version: u32,
    /// Free-form name and version of the sender's software, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Hello {
    /// A `Hello` advertising this crate's range
    /// ([`MIN_PROTOCOL_VERSION`]`..=`[`PROTOCOL_VERSION`]).
    pub fn new(agent: Option<String>) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            agent,
        }
    }
}

/// Picks the protocol version for a connection: the newest version in both
/// the local range `local_min..=local_max` and the peer's
/// `peer.min_version..=peer.version`.
///
/// On failure the returned [`ErrorBody`] (code
/// [`ErrorCode::UnsupportedVersion`]) names both ranges; the agent sends it
/// in an `Error` frame and closes the connection.
pub fn negotiate_version(local_min: u32, local_max: u32, peer: &Hello) -> Result<u32, ErrorBody> {
    let chosen = local_max.min(peer.version);
    if chosen >= local_min.max(peer.min_version) {
        Ok(chosen)
    } else {
        Err(ErrorBody {
            code: ErrorCode::UnsupportedVersion,
            message: format!(
                "no common protocol version: peer speaks {}..={}, we speak {}..={}",
                peer.min_version, peer.version, local_min, local_max
            ),
        })
    }
}

/// A request from the host to the agent (payload of a `Request` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Assemble the container root and per-container files. Answered with
    /// [`Response::Created`].
    CreateContainer {
        /// Container id, unique within the sandbox.
        container_id: String,
        /// Where the root filesystem comes from.
        rootfs: Rootfs,
        /// Hostname inside the container's UTS namespace.
        #[serde(default)]
        hostname: Option<String>,
        /// Content for the container's `/etc/hosts`.
        #[serde(default)]
        hosts: Option<String>,
        /// Content for the container's `/etc/resolv.conf`.
        #[serde(default)]
        resolv_conf: Option<String>,
    },
    /// Start a process in a container. Answered with [`Response::Started`].
    ///
    /// Stream ids are chosen by the host (non-zero, unused on this
    /// connection). With `process.terminal` the pty's output is carried on
    /// `stdout` and `stderr` must be `None`. A `None` stream means that stdio
    /// is connected to `/dev/null`.
    Exec {
        /// Container to run in.
        container_id: String,
        /// Process id chosen by the host, unique within the container.
        exec_id: String,
        /// What to run and how.
        process: Process,
        /// Stream the host sends stdin on.
        #[serde(default)]
        stdin: Option<u32>,
        /// Stream the agent sends stdout (or the pty) on.
        #[serde(default)]
        stdout: Option<u32>,
        /// Stream the agent sends stderr on.
        #[serde(default)]
        stderr: Option<u32>,
        /// Keep stdout and stderr when the host connection goes away:
        /// the agent goes on reading them (keeping the last
        /// [`KEPT_OUTPUT`] bytes of each) until a host sends
        /// [`Request::Attach`].
        #[serde(default, skip_serializing_if = "is_false")]
        keep_output: bool,
    },
    /// Connect the output of a process started with `keep_output` to
    /// streams of this connection (after the connection that started it
    /// went away). What was kept is sent first. Answered with
    /// [`Response::Done`]; `AlreadyExists` while another live connection
    /// holds the output.
    ///
    /// `stdout_from`/`stderr_from` say how many bytes of that stream the
    /// host has stored (counted from the process's start, over every
    /// connection): what was sent past that, and may have been lost with
    /// the old connection, is sent again first, as far as the agent still
    /// has it (the last [`KEPT_OUTPUT`] bytes sent). Without them the
    /// output goes on from the first byte never sent.
    Attach {
        /// Container of the process.
        container_id: String,
        /// The process.
        exec_id: String,
        /// Stream for its stdout (or pty).
        #[serde(default)]
        stdout: Option<u32>,
        /// Stream for its stderr.
        #[serde(default)]
        stderr: Option<u32>,
        /// Bytes of stdout the host has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout_from: Option<u64>,
        /// Bytes of stderr the host has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr_from: Option<u64>,
    },
    /// Set a process's terminal size. Answered with [`Response::Done`].
    ResizeTty {
        /// Container of the process.
        container_id: String,
        /// The process.
        exec_id: String,
        /// New number of rows.
        rows: u16,
        /// New number of columns.
        cols: u16,
    },
    /// Send a signal to a process. Answered with [`Response::Done`].
    Signal {
        /// Container of the process.
        container_id: String,
        /// The process.
        exec_id: String,
        /// Signal number (Linux numbering).
        signal: i32,
    },
    /// Wait for a process to exit. Answered with [`Response::Exited`] once
    /// it has (immediately if it already had).
    Wait {
        /// Container of the process.
        container_id: String,
        /// The process.
        exec_id: String,
    },
    /// Write a file (or unpack a tar archive) into a container. The host
    /// sends the content as `Data` on `stream`, then `Close`; the agent
    /// answers [`Response::Done`] once everything is written, or an error
    /// as soon as one happens.
    CopyIn {
        /// Container to write into.
        container_id: String,
        /// Destination path inside the container (a directory when `tar`).
        path: String,
        /// Stream carrying the content.
        stream: u32,
        /// The content is a tar archive to unpack at `path`.
        tar: bool,
        /// Permission bits for a plain file (ignored when `tar`).
        mode: u32,
    },
    /// Read a file (or a tar archive of a path) out of a container. The
    /// agent sends the content as `Data` on `stream`, then `Close`. It
    /// answers [`Response::Done`] or an error; the host must keep reading
    /// the stream while it waits for the answer.
    CopyOut {
        /// Container to read from.
        container_id: String,
        /// Source path inside the container.
        path: String,
        /// Stream carrying the content.
        stream: u32,
        /// Send a tar archive of `path` instead of the file's bytes.
        tar: bool,
    },
    /// Describe a path in a container (a final symlink is not followed).
    /// Answered with [`Response::PathInfo`].
    Stat {
        /// The container.
        container_id: String,
        /// Absolute path inside the container.
        path: String,
    },
    /// Resource usage of a container. Answered with [`Response::Stats`].
    Stats {
        /// The container.
        container_id: String,
    },
    /// Stop everything and power the VM off. Answered with
    /// [`Response::Done`] before the agent powers off.
    Shutdown,
}

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// Guest block device holding the read-only image (e.g. `/dev/vda`).
    /// Empty means: use the guest's own root as the lower layer (tests).
    pub image: String,
    /// Filesystem of the image device: `"erofs"` or `"ext4"`.
    pub image_fstype: String,
    /// Guest block device for the writable upper layer; `None` = tmpfs.
    #[serde(default)]
    pub scratch: Option<String>,
}

/// The process to run, after the OCI runtime spec's `process` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// `argv`; `args[0]` is looked up in `PATH` from `env` if it has no `/`.
    pub args: Vec<String>,
    /// Environment as `KEY=value` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// Identity to run as.
    pub user: User,
    /// Resource limits to set before exec.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Run on a pseudo terminal.
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size (only with `terminal`).
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    /// Set `PR_SET_NO_NEW_PRIVS`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Capability names (`"CAP_CHOWN"`, ...) to keep; `None` = the OCI
    /// default set.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

/// A user identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// Limit name as in the OCI spec, e.g. `"RLIMIT_NOFILE"`.
    pub kind: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// A successful answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The container was created.
    Created,
    /// The process was started.
    Started {
        /// Its pid in the guest (outside the container's pid namespace).
        pid: u32,
    },
    /// The process has exited.
    Exited(ExitStatus),
    /// The request was carried out and has nothing to report.
    Done,
    /// Resource usage.
    Stats(Stats),
    /// What a path is.
    PathInfo(PathInfo),
}

/// What a path in a container is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathInfo {
    /// Its type.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (including set-id and sticky).
    pub mode: u32,
    /// Where a symlink points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
    /// A kind this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatus {
    /// Exit code if it exited normally.
    pub code: Option<i32>,
    /// Signal number if a signal killed it.
    pub signal: Option<i32>,
    /// The container's cgroup hit its memory limit and the OOM killer ran.
    #[serde(default)]
    pub oom_killed: bool,
}

/// Resource usage of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// CPU time used, in microseconds.
    pub cpu_usec: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Memory limit, if any.
    pub memory_max_bytes: Option<u64>,
    /// Number of tasks.
    pub pids: u64,
}

/// A failed answer to a [`Request`], or (in an `Error` frame) the reason a
/// connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// Stable error codes. Serialised as snake_case strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No common protocol version.
    UnsupportedVersion,
    /// The request is malformed or contradicts itself.
    InvalidArgument,
    /// The container, process or path does not exist.
    NotFound,
    /// The container or process id is taken.
    AlreadyExists,
    /// The executable could not be found.
    ExecutableNotFound,
    /// The operation is not permitted.
    PermissionDenied,
    /// An I/O error.
    Io,
    /// The protocol was violated (bad frame, unknown stream, window overrun).
    Protocol,
    /// The request is valid but the agent cannot do it.
    Unsupported,
    /// A bug or an unexpected failure in the agent.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// An unsolicited notice from the agent (payload of an `Event` frame).
///
/// Receivers ignore events they do not know ([`Event::Unknown`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A process exited.
    Exited {
        /// Container of the process.
        container_id: String,
        /// The process.
        exec_id: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// A container's cgroup ran out of memory.
    Oom {
        /// The container.
        container_id: String,
    },
    /// An event this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// The wire form of a `Response` frame's payload:
/// `{"ok": <Response>}` or `{"err": <ErrorBody>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WireResult {
    Ok(Response),
    Err(ErrorBody),
}

impl From<WireResult> for Result<Response, ErrorBody> {
    fn from(w: WireResult) -> Self {
        match w {
            WireResult::Ok(r) => Ok(r),
            WireResult::Err(e) => Err(e),
        }
    }
}

/// Borrowed twin of [`WireResult`] for encoding without a clone.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireResultRef<'a> {
    Ok(&'a Response),
    Err(&'a ErrorBody),
}

impl<'a> From<&'a Result<Response, ErrorBody>> for WireResultRef<'a> {
    fn from(r: &'a Result<Response, ErrorBody>) -> Self {
        match r {
            Ok(r) => WireResultRef::Ok(r),
            Err(e) => WireResultRef::Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Process {
        Process {
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
            },
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096,
            }],
            terminal: false,
            console_size: None,
            no_new_privileges: true,
            capabilities: None,
        }
    }

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::CreateContainer {
                container_id: "c1".into(),
                rootfs: Rootfs {
                    image: "/dev/vda".into(),
                    image_fstype: "erofs".into(),
                    scratch: Some("/dev/vdb".into()),
                },
                hostname: Some("box".into()),
                hosts: None,
                resolv_conf: Some("nameserver 10.0.0.1\n".into()),
            },
            Request::Exec {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                process: process(),
                stdin: Some(1),
                stdout: Some(2),
                stderr: Some(3),
                keep_output: true,
            },
            Request::Attach {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                stdout: Some(6),
                stderr: None,
                stdout_from: Some(1 << 40),
                stderr_from: None,
            },
            Request::ResizeTty {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                rows: 24,
                cols: 80,
            },
            Request::Signal {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                signal: 15,
            },
            Request::Wait {
                container_id: "c1".into(),
                exec_id: "e1".into(),
            },
            Request::CopyIn {
                container_id: "c1".into(),
                path: "/tmp/x".into(),
                stream: 4,
                tar: false,
                mode: 0o644,
            },
            Request::CopyOut {
                container_id: "c1".into(),
                path: "/etc".into(),
                stream: 5,
                tar: true,
            },
            Request::Stats {
                container_id: "c1".into(),
            },
            Request::Stat {
                container_id: "c1".into(),
                path: "/etc".into(),
            },
            Request::Shutdown,
        ];
        for r in reqs {
            let json = serde_json::to_string(&r).unwrap();
            let back: Request = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r, "{json}");
        }
    }

    #[test]
    fn wire_shapes_are_stable() {
        let json = serde_json::to_string(&Request::Shutdown).unwrap();
        assert_eq!(json, r#"{"type":"shutdown"}"#);
        let json = serde_json::to_string(&WireResultRef::Ok(&Response::Exited(ExitStatus {
            code: Some(3),
            signal: None,
            oom_killed: false,
        })))
        .unwrap();
        assert_eq!(
            json,
            r#"{"ok":{"type":"exited","code":3,"signal":null,"oom_killed":false}}"#
        );
        let json = serde_json::to_string(&WireResultRef::Err(&ErrorBody::new(
            ErrorCode::NotFound,
            "no such container",
        )))
        .unwrap();
        assert_eq!(
            json,
            r#"{"err":{"code":"not_found","message":"no such container"}}"#
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = r#"{"type":"stats","container_id":"c","extra":1}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
        let bad = r#"{"type":"exited","code":0,"signal":null,"oom_killed":false,"x":1}"#;
        assert!(serde_json::from_str::<Response>(bad).is_err());
        let bad = r#"{"version":1,"min_version":1,"nope":true}"#;
        assert!(serde_json::from_str::<Hello>(bad).is_err());
        let bad = r#"{"type":"launch_missiles"}"#;
        assert!(serde_json::from_str::<Request>(bad).is_err());
    }

    #[test]
    fn unknown_error_codes_and_events_have_a_home() {
        let e: ErrorBody =
            serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Unknown);
        let ev: Event = serde_json::from_str(r#"{"type":"balloon_inflated"}"#).unwrap();
        assert_eq!(ev, Event::Unknown);
    }

    #[test]
    fn optional_fields_may_be_omitted() {
        let r: Request = serde_json::from_str(
            r#"{"type":"create_container","container_id":"c","rootfs":{"image":"","image_fstype":"ext4"}}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::CreateContainer { hostname: None, .. }));
    }

    #[test]
    fn version_negotiation() {
        let peer = |min_version, version| Hello {
            version,
            min_version,
            agent: None,
        };
        assert_eq!(negotiate_version(1, 1, &peer(1, 1)), Ok(1));
        assert_eq!(negotiate_version(1, 3, &peer(2, 5)), Ok(3));
        assert_eq!(negotiate_version(2, 5, &peer(1, 3)), Ok(3));
        let err = negotiate_version(1, 1, &peer(2, 3)).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedVersion);
        assert!(err.message.contains("2..=3") && err.message.contains("1..=1"));
        assert!(negotiate_version(3, 4, &peer(1, 2)).is_err());
        // A peer with an inverted range gets no version.
        assert!(negotiate_version(1, 5, &peer(4, 2)).is_err());
    }
}
