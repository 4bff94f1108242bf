//! Running `ip`, `tc` and `nft`: one process per batch, its stdin the
//! batch, its stderr kept for the error. Bounded in time, killed when the
//! caller gives up. Nothing here knows what the commands do.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::NetError;

/// Longest any one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `prog args...` with `stdin` fed to it; an error names the command
/// and carries its stderr.
pub async fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    let shown = || {
        let mut s = prog.to_string();
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NetError::Spawn {
            prog: prog.to_string(),
            source,
        })?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        // A command that fails early may close its stdin: its status says why.
        let _ = pipe.write_all(text.as_bytes()).await;
        drop(pipe);
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| NetError::Command {
            cmd: shown(),
            detail: format!("did not finish within {COMMAND_TIMEOUT:?}"),
        })?
        .map_err(|e| NetError::Command {
            cmd: shown(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        cmd: shown(),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_name_the_command_and_its_stderr() {
        assert!(run("true", &[], None).await.is_ok());
        let e = run("sh", &["-c", "cat >&2; exit 3"], Some("boom\n"))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("sh -c cat >&2; exit 3"), "{e}");
        assert!(e.contains("boom"), "{e}");
        let e = run("/no/such/ip", &[], None).await.err();
        assert!(matches!(e, Some(NetError::Spawn { .. })), "{e:?}");
    }
}
