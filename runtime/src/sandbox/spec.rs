//! What a client asks for: a sandbox ([`SandboxSpec`]) or a process in one
//! ([`ExecSpec`]), as plain serde structs that refuse unknown fields, and
//! their validation.
//!
//! Validation happens once, before anything is created, so every value a
//! client can send either fails here with a [`SpecError`] (a 400 in the REST
//! API) or is one the runtime can act on. Turning an image's defaults and a
//! spec into the process the agent runs is also here ([`resolve_process`]);
//! starting it is not.

use std::collections::BTreeMap;

use cocoon_proto::{ConsoleSize, Process, User};
use serde::{Deserialize, Serialize};

use crate::image::DefaultProcess;

/// Fewest vCPUs a sandbox can have.
pub const MIN_VCPUS: u32 = 1;
/// Most vCPUs a sandbox can have.
pub const MAX_VCPUS: u32 = 64;
/// Least guest memory: the agent keeps 48 MiB for itself.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Most guest memory (64 GiB).
pub const MAX_MEMORY_MIB: u64 = 64 << 10;
/// Smallest scratch disk.
pub const MIN_DISK_MIB: u64 = 16;
/// Largest scratch disk (1 TiB; it is sparse, so only what is written uses
/// space).
pub const MAX_DISK_MIB: u64 = 1 << 20;
/// Longest lifetime a sandbox may ask for (30 days).
pub const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;
/// Default vCPUs.
pub const DEFAULT_VCPUS: u32 = 1;
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Default scratch disk size.
pub const DEFAULT_DISK_MIB: u64 = 1024;
/// `PATH` when neither the image nor the client sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const MAX_ARGS: usize = 4096;
const MAX_ENV: usize = 4096;
const MAX_STRINGS_BYTES: usize = 1 << 20;
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 128;
const MAX_LABEL_VALUE: usize = 1024;
const MAX_PATH: usize = 4096;
/// Largest `stdin` an exec request may carry.
pub const MAX_EXEC_STDIN: usize = 16 << 20;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A field has a value outside what is allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as named in the JSON.
        field: &'static str,
        /// What is wrong, with the allowed range.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No NIC at all (the default: a sandbox reaches nothing unless asked).
    #[default]
    None,
    /// Outbound access through a TAP in the sandbox's own network
    /// namespace, with NAT on the host; no access to other sandboxes or to
    /// the host's services (see [`crate::network`]).
    Default,
}

/// A request for a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Image name or digest, as imported.
    pub image: String,
    /// Arguments replacing the image's `Cmd` (its `Entrypoint` stays in
    /// front); empty runs the image's default.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=value` strings added to (and overriding) the image's `Env`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; the image's when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `uid[:gid]` (or `root`); the image's when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Size of the sandbox's sparse scratch disk (its writable layer), MiB.
    #[serde(default = "default_disk_mib")]
    pub disk_mib: u64,
    /// Network mode.
    #[serde(default)]
    pub network: Network,
    /// Stop the sandbox this many seconds after it started.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Free-form labels to find sandboxes by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Give the init process a stdin stream, to be written through an
    /// attach (`docker run -i`); otherwise its stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Run the init process on a pseudo terminal (`docker run -t`): its
    /// output is one stream, logged as stdout.
    #[serde(default)]
    pub tty: bool,
}

fn default_vcpus() -> u32 {
    DEFAULT_VCPUS
}
fn default_memory_mib() -> u64 {
    DEFAULT_MEMORY_MIB
}
fn default_disk_mib() -> u64 {
    DEFAULT_DISK_MIB
}

impl SandboxSpec {
    /// A spec for `image` with every other field at its default.
    pub fn new(image: impl Into<String>) -> Self {
        SandboxSpec {
            image: image.into(),
            cmd: Vec::new(),
            env: Vec::new(),
            workdir: None,
            user: None,
            vcpus: DEFAULT_VCPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
            disk_mib: DEFAULT_DISK_MIB,
            network: Network::None,
            timeout_s: None,
            labels: BTreeMap::new(),
            stdin: false,
            tty: false,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.image.is_empty() || self.image.len() > 512 {
            return Err(invalid("image", "must be 1 to 512 characters"));
        }
        if self.image.chars().any(char::is_control) {
            return Err(invalid("image", "must not contain control characters"));
        }
        check_args("cmd", &self.cmd, false)?;
        check_env("env", &self.env)?;
        if let Some(w) = &self.workdir {
            check_workdir("workdir", w)?;
        }
        if let Some(u) = &self.user {
            parse_user(u).map_err(|r| invalid("user", r))?;
        }
        if !(MIN_VCPUS..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(invalid(
                "vcpus",
                format!("must be {MIN_VCPUS} to {MAX_VCPUS}, not {}", self.vcpus),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(invalid(
                "memory_mib",
                format!(
                    "must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}, not {}",
                    self.memory_mib
                ),
            ));
        }
        if !(MIN_DISK_MIB..=MAX_DISK_MIB).contains(&self.disk_mib) {
            return Err(invalid(
                "disk_mib",
                format!(
                    "must be {MIN_DISK_MIB} to {MAX_DISK_MIB}, not {}",
                    self.disk_mib
                ),
            ));
        }
        if let Some(t) = self.timeout_s {
            if !(1..=MAX_TIMEOUT_S).contains(&t) {
                return Err(invalid(
                    "timeout_s",
                    format!("must be 1 to {MAX_TIMEOUT_S}, not {t}"),
                ));
            }
        }
        check_labels(&self.labels)
    }
}

/// The largest sandbox one daemon creates: the absolute limits
/// ([`MAX_VCPUS`], [`MAX_MEMORY_MIB`], [`MAX_DISK_MIB`]) unless its operator
/// set lower ones (a small host, a test machine), so that no client can ask
/// for more than the host can give.
///
/// A limit is never below the default size: a create that names no size
/// must still be possible.
///
/// ```
/// use cocoon_runtime::sandbox::{Limits, SandboxSpec};
///
/// let limits = Limits::new(2, 512, 2048).unwrap();
/// let mut spec = SandboxSpec::new("busybox");
/// assert!(limits.check(&spec).is_ok());
/// spec.vcpus = 4;
/// assert!(limits.check(&spec).unwrap_err().to_string().contains("at most 2"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_vcpus: u32,
    max_memory_mib: u64,
    max_disk_mib: u64,
}

impl Default for Limits {
    /// The absolute limits.
    fn default() -> Self {
        Limits {
            max_vcpus: MAX_VCPUS,
            max_memory_mib: MAX_MEMORY_MIB,
            max_disk_mib: MAX_DISK_MIB,
        }
    }
}

impl Limits {
    /// Limits of `max_vcpus` vCPUs, `max_memory_mib` of guest memory and a
    /// `max_disk_mib` scratch disk per sandbox. Each must lie between the
    /// default size and the absolute limit.
    pub fn new(
        max_vcpus: u32,
        max_memory_mib: u64,
        max_disk_mib: u64,
    ) -> Result<Limits, SpecError> {
        if !(DEFAULT_VCPUS..=MAX_VCPUS).contains(&max_vcpus) {
            return Err(invalid(
                "max_vcpus",
                format!("must be {DEFAULT_VCPUS} to {MAX_VCPUS}, not {max_vcpus}"),
            ));
        }
        if !(DEFAULT_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&max_memory_mib) {
            return Err(invalid(
                "max_memory_mib",
                format!(
                    "must be {DEFAULT_MEMORY_MIB} (the default size) to {MAX_MEMORY_MIB}, not {max_memory_mib}"
                ),
            ));
        }
        if !(DEFAULT_DISK_MIB..=MAX_DISK_MIB).contains(&max_disk_mib) {
            return Err(invalid(
                "max_disk_mib",
                format!(
                    "must be {DEFAULT_DISK_MIB} (the default size) to {MAX_DISK_MIB}, not {max_disk_mib}"
                ),
            ));
        }
        Ok(Limits {
            max_vcpus,
            max_memory_mib,
            max_disk_mib,
        })
    }

    /// Most vCPUs per sandbox.
    pub fn max_vcpus(&self) -> u32 {
        self.max_vcpus
    }

    /// Most guest memory per sandbox, MiB.
    pub fn max_memory_mib(&self) -> u64 {
        self.max_memory_mib
    }

    /// Largest scratch disk per sandbox, MiB.
    pub fn max_disk_mib(&self) -> u64 {
        self.max_disk_mib
    }

    /// Refuses a spec that asks for more than these limits (checked after
    /// [`SandboxSpec::validate`], which holds the absolute ones).
    pub fn check(&self, spec: &SandboxSpec) -> Result<(), SpecError> {
        if spec.vcpus > self.max_vcpus {
            return Err(invalid(
                "vcpus",
                format!(
                    "this daemon allows at most {} per sandbox, not {}",
                    self.max_vcpus, spec.vcpus
                ),
            ));
        }
        if spec.memory_mib > self.max_memory_mib {
            return Err(invalid(
                "memory_mib",
                format!(
                    "this daemon allows at most {} per sandbox, not {}",
                    self.max_memory_mib, spec.memory_mib
                ),
            ));
        }
        if spec.disk_mib > self.max_disk_mib {
            return Err(invalid(
                "disk_mib",
                format!(
                    "this daemon allows at most {} per sandbox, not {}",
                    self.max_disk_mib, spec.disk_mib
                ),
            ));
        }
        Ok(())
    }
}

/// A request to run a process in a running sandbox and collect its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The command line (required).
    pub cmd: Vec<String>,
    /// `KEY=value` strings added to the sandbox's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; the sandbox's when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `uid[:gid]` (or `root`); the sandbox's when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Written to the process's stdin, which is then closed; no stdin
    /// (`/dev/null`) when absent.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Kill the process after this many seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

impl ExecSpec {
    /// A spec running `cmd` with every other field at its default.
    pub fn new(cmd: Vec<String>) -> Self {
        ExecSpec {
            cmd,
            env: Vec::new(),
            workdir: None,
            user: None,
            stdin: None,
            timeout_s: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_args("cmd", &self.cmd, true)?;
        check_env("env", &self.env)?;
        if let Some(w) = &self.workdir {
            check_workdir("workdir", w)?;
        }
        if let Some(u) = &self.user {
            parse_user(u).map_err(|r| invalid("user", r))?;
        }
        if self
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > MAX_EXEC_STDIN)
        {
            return Err(invalid(
                "stdin",
                format!("must be at most {MAX_EXEC_STDIN} bytes"),
            ));
        }
        if let Some(t) = self.timeout_s {
            if !(1..=MAX_TIMEOUT_S).contains(&t) {
                return Err(invalid(
                    "timeout_s",
                    format!("must be 1 to {MAX_TIMEOUT_S}, not {t}"),
                ));
            }
        }
        Ok(())
    }
}

/// A process to run in a sandbox with its stdio streamed both ways (the
/// interactive exec): like [`ExecSpec`] without a fixed stdin or time
/// limit, with a terminal if asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStreamSpec {
    /// The command line (required).
    pub cmd: Vec<String>,
    /// `KEY=value` strings added to the sandbox's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; the sandbox's when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `uid[:gid]` (or `root`); the sandbox's when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Give the process a stdin stream (else `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Run it on a pseudo terminal: stdout and stderr are one stream.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's initial size (with `tty`).
    #[serde(default)]
    pub size: Option<ConsoleSize>,
}

impl ExecStreamSpec {
    /// A spec running `cmd` without stdin or terminal.
    pub fn new(cmd: Vec<String>) -> Self {
        ExecStreamSpec {
            cmd,
            env: Vec::new(),
            workdir: None,
            user: None,
            stdin: false,
            tty: false,
            size: None,
        }
    }

    /// The same process as a plain [`ExecSpec`] (no stdin data).
    pub fn as_exec(&self) -> ExecSpec {
        ExecSpec {
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            stdin: None,
            timeout_s: None,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.size.is_some() && !self.tty {
            return Err(invalid("size", "only with tty"));
        }
        self.as_exec().validate()
    }
}

fn check_strings(field: &'static str, v: &[String], max: usize) -> Result<(), SpecError> {
    if v.len() > max {
        return Err(invalid(field, format!("at most {max} entries")));
    }
    if v.iter().map(String::len).sum::<usize>() > MAX_STRINGS_BYTES {
        return Err(invalid(
            field,
            format!("at most {MAX_STRINGS_BYTES} bytes in all"),
        ));
    }
    if v.iter().any(|s| s.contains('\0')) {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_args(field: &'static str, args: &[String], required: bool) -> Result<(), SpecError> {
    if required && args.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if args.first().is_some_and(String::is_empty) {
        return Err(invalid(field, "the program name must not be empty"));
    }
    check_strings(field, args, MAX_ARGS)
}

fn check_env(field: &'static str, env: &[String]) -> Result<(), SpecError> {
    check_strings(field, env, MAX_ENV)?;
    for e in env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(invalid(
                    field,
                    format!(
                        "{:?} is not KEY=value",
                        e.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn check_workdir(field: &'static str, w: &str) -> Result<(), SpecError> {
    if !w.starts_with('/') || w.len() > MAX_PATH || w.contains('\0') {
        return Err(invalid(
            field,
            "must be an absolute path without NUL characters",
        ));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(invalid(
                "labels",
                format!(
                    "key {:?} must be 1 to {MAX_LABEL_KEY} of [A-Za-z0-9._/-]",
                    k.chars().take(64).collect::<String>()
                ),
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(invalid(
                "labels",
                format!("value of {k:?} must be at most {MAX_LABEL_VALUE} bytes without control characters"),
            ));
        }
    }
    Ok(())
}

/// Parses `uid[:gid]`, or `root`; an empty string is root. A uid alone runs
/// with gid 0, as Docker does for a uid the image's passwd does not know.
/// Names other than `root` are refused: the image's `/etc/passwd` is not
/// read yet.
pub fn parse_user(s: &str) -> Result<User, String> {
    let root = User::default();
    if s.is_empty() || s == "root" || s == "root:root" {
        return Ok(root);
    }
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let num = |v: &str| -> Result<u32, String> {
        v.parse::<u32>().map_err(|_| {
            format!(
                "{:?} is not numeric: give uid[:gid] (user names are not looked up yet)",
                s.chars().take(64).collect::<String>()
            )
        })
    };
    let uid = if u == "root" { 0 } else { num(u)? };
    let gid = match g {
        None => 0,
        Some("root") => 0,
        Some(g) => num(g)?,
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// Merges environments: later lists override earlier ones by key, order of
/// first appearance kept; a `PATH` is added when none is set.
pub fn merge_env<'a>(layers: impl IntoIterator<Item = &'a [String]>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for layer in layers {
        for e in layer {
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            match out
                .iter_mut()
                .find(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k) == key)
            {
                Some(slot) => slot.clone_from(e),
                None => out.push(e.clone()),
            }
        }
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// The init process of a sandbox: the image's defaults overridden by the
/// spec. Fails when neither gives a command, or the image's user is a name.
pub fn resolve_process(image: &DefaultProcess, spec: &SandboxSpec) -> Result<Process, SpecError> {
    let args = image.args_with(&spec.cmd);
    if args.is_empty() {
        return Err(invalid("cmd", "the image has no default command: give one"));
    }
    let user = match &spec.user {
        Some(u) => parse_user(u).map_err(|r| invalid("user", r))?,
        None => parse_user(&image.user)
            .map_err(|r| invalid("user", format!("the image's user: {r}")))?,
    };
    let cwd = match &spec.workdir {
        Some(w) => w.clone(),
        None if image.working_dir.is_empty() => "/".to_string(),
        None => image.working_dir.clone(),
    };
    Ok(Process {
        args,
        env: merge_env([image.env.as_slice(), spec.env.as_slice()]),
        cwd,
        user,
        rlimits: Vec::new(),
        terminal: spec.tty,
        console_size: None,
        no_new_privileges: false,
        capabilities: None,
    })
}

/// A process to exec next to the init: the sandbox's environment, user and
/// directory, overridden by the exec spec.
pub fn exec_process(init: &Process, spec: &ExecSpec) -> Result<Process, SpecError> {
    let user = match &spec.user {
        Some(u) => parse_user(u).map_err(|r| invalid("user", r))?,
        None => init.user.clone(),
    };
    Ok(Process {
        args: spec.cmd.clone(),
        env: merge_env([init.env.as_slice(), spec.env.as_slice()]),
        cwd: spec.workdir.clone().unwrap_or_else(|| init.cwd.clone()),
        user,
        rlimits: Vec::new(),
        terminal: false,
        console_size: None,
        no_new_privileges: false,
        capabilities: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SandboxSpec, String> {
        let s: SandboxSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn minimal_spec_takes_defaults() {
        let s = parse(r#"{"image":"busybox"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, SandboxSpec::new("busybox"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse(r#"{"image":"busybox","memory":5}"#).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        for (json, field) in [
            (r#"{"image":"b","memory_mib":0}"#, "memory_mib"),
            (r#"{"image":"b","memory_mib":99999999}"#, "memory_mib"),
            (r#"{"image":"b","vcpus":0}"#, "vcpus"),
            (r#"{"image":"b","vcpus":1000}"#, "vcpus"),
            (r#"{"image":"b","disk_mib":1}"#, "disk_mib"),
            (r#"{"image":"b","timeout_s":0}"#, "timeout_s"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        }
        // Negative and fractional numbers fail in the parser.
        assert!(parse(r#"{"image":"b","vcpus":-1}"#).is_err());
        assert!(parse(r#"{"image":"b","memory_mib":1.5}"#).is_err());
    }

    #[test]
    fn daemon_limits_refuse_bigger_sandboxes() {
        let limits = Limits::new(1, 256, 1024).unwrap_or_else(|e| panic!("{e}"));
        assert!(limits.check(&SandboxSpec::new("b")).is_ok());
        for (json, field) in [
            (r#"{"image":"b","vcpus":2}"#, "vcpus"),
            (r#"{"image":"b","memory_mib":257}"#, "memory_mib"),
            (r#"{"image":"b","disk_mib":1025}"#, "disk_mib"),
        ] {
            let spec = parse(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let e = limits.check(&spec).unwrap_err().to_string();
            assert!(e.starts_with(field) && e.contains("at most"), "{json}: {e}");
        }
        assert!(Limits::default()
            .check(
                &parse(r#"{"image":"b","vcpus":64,"memory_mib":65536}"#)
                    .unwrap_or_else(|e| panic!("{e}"))
            )
            .is_ok());
        // Limits below the default size (or above the absolute ones) are refused.
        assert!(Limits::new(0, 256, 1024).is_err());
        assert!(Limits::new(1, 128, 1024).is_err());
        assert!(Limits::new(1, 256, 16).is_err());
        assert!(Limits::new(65, 256, 1024).is_err());
        assert_eq!(
            Limits::new(MAX_VCPUS, MAX_MEMORY_MIB, MAX_DISK_MIB),
            Ok(Limits::default())
        );
    }

    #[test]
    fn network_modes_are_none_and_default() {
        let s = parse(r#"{"image":"b","network":"default"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.network, Network::Default);
        assert_eq!(SandboxSpec::new("b").network, Network::None);
        assert!(parse(r#"{"image":"b","network":"host"}"#).is_err());
        assert!(parse(r#"{"image":"b","network":"none"}"#).is_ok());
    }

    #[test]
    fn bad_strings_are_refused() {
        assert!(parse(r#"{"image":""}"#).is_err());
        assert!(parse(r#"{"image":"b","env":["NOEQUALS"]}"#).is_err());
        assert!(parse(r#"{"image":"b","env":["=v"]}"#).is_err());
        assert!(parse(r#"{"image":"b","workdir":"rel"}"#).is_err());
        assert!(parse(r#"{"image":"b","cmd":["a\u0000b"]}"#).is_err());
        assert!(parse(r#"{"image":"b","cmd":[""]}"#).is_err());
        assert!(parse(r#"{"image":"b","labels":{"bad key":"v"}}"#).is_err());
        assert!(parse(r#"{"image":"b","labels":{"team":"a"}}"#).is_ok());
        assert!(parse(r#"{"image":"b","user":"nobody"}"#).is_err());
    }

    #[test]
    fn users_parse_like_docker() {
        assert_eq!(parse_user("").map(|u| (u.uid, u.gid)), Ok((0, 0)));
        assert_eq!(parse_user("root").map(|u| (u.uid, u.gid)), Ok((0, 0)));
        assert_eq!(parse_user("1000").map(|u| (u.uid, u.gid)), Ok((1000, 0)));
        assert_eq!(
            parse_user("1000:100").map(|u| (u.uid, u.gid)),
            Ok((1000, 100))
        );
        assert!(parse_user("1000:").is_err());
        assert!(parse_user("-1").is_err());
    }

    #[test]
    fn env_merges_by_key_and_adds_path() {
        let image = vec!["A=1".to_string(), "B=2".to_string()];
        let user = vec!["B=3".to_string(), "C=4".to_string()];
        assert_eq!(
            merge_env([image.as_slice(), user.as_slice()]),
            vec![DEFAULT_PATH, "A=1", "B=3", "C=4"]
        );
        let with_path = vec!["PATH=/x".to_string()];
        assert_eq!(merge_env([with_path.as_slice()]), vec!["PATH=/x"]);
    }

    #[test]
    fn init_process_follows_image_then_spec() {
        let image = DefaultProcess {
            entrypoint: vec!["/bin/ep".into()],
            cmd: vec!["default".into()],
            env: vec!["X=1".into()],
            working_dir: "/srv".into(),
            user: "5:6".into(),
        };
        let mut spec = SandboxSpec::new("i");
        let p = resolve_process(&image, &spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.args, vec!["/bin/ep", "default"]);
        assert_eq!(p.cwd, "/srv");
        assert_eq!((p.user.uid, p.user.gid), (5, 6));
        spec.cmd = vec!["mine".into()];
        spec.workdir = Some("/w".into());
        spec.user = Some("0".into());
        let p = resolve_process(&image, &spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.args, vec!["/bin/ep", "mine"]);
        assert_eq!(p.cwd, "/w");
        assert_eq!(p.user.uid, 0);
        let empty = DefaultProcess::default();
        assert!(resolve_process(&empty, &SandboxSpec::new("i")).is_err());
    }

    #[test]
    fn exec_spec_needs_a_command() {
        assert!(ExecSpec::new(Vec::new()).validate().is_err());
        assert!(ExecSpec::new(vec!["true".into()]).validate().is_ok());
        let e: Result<ExecSpec, _> = serde_json::from_str(r#"{"cmd":["x"],"tty":true}"#);
        assert!(e.is_err());
    }
}
