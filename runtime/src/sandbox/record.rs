//! The persisted description of a sandbox: its state, what it was asked
//! for, what it runs and how it ended. One [`SandboxRecord`] per sandbox is
//! kept in the state database and returned by the API as it is.

use std::time::{SystemTime, UNIX_EPOCH};

use cocoon_proto::Process;
use serde::{Deserialize, Serialize};

use super::spec::SandboxSpec;
use crate::network::SandboxNetwork;

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Disks being made, VM booting, agent not reached yet.
    Creating,
    /// The VM is up and its init process was started.
    Running,
    /// The VM was shut down (asked for, or its init exited).
    Stopped,
    /// Something went wrong; `reason` says what. The VM is gone.
    Failed,
    /// Removed; only seen in the answer to a delete.
    Deleted,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [SandboxState; 5] = [
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Stopped,
        SandboxState::Failed,
        SandboxState::Deleted,
    ];

    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Failed => "failed",
            SandboxState::Deleted => "deleted",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s names.
    pub fn parse(s: &str) -> Option<SandboxState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the sandbox is over (no VM, nothing more will happen).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SandboxState::Stopped | SandboxState::Failed | SandboxState::Deleted
        )
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128 + the signal number when a signal killed it
    /// (as a shell reports it).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The sandbox's memory limit was hit and the OOM killer ran.
    pub oom_killed: bool,
}

impl From<cocoon_proto::ExitStatus> for ExitInfo {
    fn from(s: cocoon_proto::ExitStatus) -> Self {
        ExitInfo {
            exit_code: match (s.code, s.signal) {
                (Some(c), _) => c,
                (None, Some(sig)) => 128 + sig,
                (None, None) => -1,
            },
            signal: s.signal,
            oom_killed: s.oom_killed,
        }
    }
}

/// The VMM process of a sandbox, identified so that a recycled pid is not
/// mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmIdentity {
    /// Its pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
}

/// Everything known about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Its id (12 lowercase hex characters).
    pub id: String,
    /// Its state.
    pub state: SandboxState,
    /// Why it failed (or why it was stopped, when not asked to).
    #[serde(default)]
    pub reason: Option<String>,
    /// The request it was made from (defaults filled in).
    pub spec: SandboxSpec,
    /// The image's manifest digest.
    pub image_digest: String,
    /// The init process (command line, environment, directory, user).
    pub process: Process,
    /// When it was asked for (RFC 3339, UTC).
    pub created_at: String,
    /// When its init process started.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it stopped or failed.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// When `spec.timeout_s` stops it (seconds since the epoch).
    #[serde(default)]
    pub deadline_unix: Option<u64>,
    /// How its init process ended, when it did.
    #[serde(default)]
    pub exit: Option<ExitInfo>,
    /// Its VMM process while it has one.
    #[serde(default)]
    pub vmm: Option<VmmIdentity>,
    /// Its address, gateway, namespace and interfaces while it holds them
    /// (`network: default`, from creation until it stops, fails or is
    /// deleted).
    #[serde(default)]
    pub network: Option<SandboxNetwork>,
}

/// Now as RFC 3339 UTC with seconds (`2024-05-01T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by eras
    // of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_565_106), "2024-05-01T12:05:06Z");
    }

    #[test]
    fn signals_become_128_plus() {
        let e = ExitInfo::from(cocoon_proto::ExitStatus {
            code: None,
            signal: Some(9),
            oom_killed: true,
        });
        assert_eq!((e.exit_code, e.signal, e.oom_killed), (137, Some(9), true));
    }

    #[test]
    fn states_round_trip() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{s}\""));
        }
    }
}
