//! Copying files into and out of a sandbox: checks of the path a caller
//! gives, and the classification of the agent's answers, so that a client's
//! mistake (a missing file, a directory where a file was expected) is told
//! apart from a failure of Cocoon.

use cocoon_proto::ErrorCode;

use crate::agent;

/// Longest path accepted (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Why a copy failed, in classes a caller can map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    /// The path does not exist in the sandbox.
    NotFound,
    /// The sandbox's permissions refuse it.
    PermissionDenied,
    /// The path or the data does not fit (a directory where a file was
    /// expected, a full disk, a bad archive, a bad path).
    Invalid,
}

/// A copy that the sandbox refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    /// The class.
    pub kind: FileErrorKind,
    /// What the agent said (it names the path).
    pub message: String,
}

/// Checks a path given for a copy: absolute, no NUL, not too long.
pub fn check_path(path: &str) -> Result<(), FileError> {
    let bad = |why: &str| FileError {
        kind: FileErrorKind::Invalid,
        message: format!(
            "path {:?}: {why}",
            path.chars().take(100).collect::<String>()
        ),
    };
    if !path.starts_with('/') {
        return Err(bad("give an absolute path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.len() > MAX_PATH {
        return Err(bad("longer than 4096 bytes"));
    }
    Ok(())
}

/// The class of an agent error answer to a copy, or `None` when the
/// failure is not the caller's (lost connection, protocol error, a bug).
pub fn classify(e: &agent::Error) -> Option<FileError> {
    let agent::Error::Agent(body) = e else {
        return None;
    };
    let kind = match body.code {
        ErrorCode::NotFound => FileErrorKind::NotFound,
        ErrorCode::PermissionDenied => FileErrorKind::PermissionDenied,
        ErrorCode::InvalidArgument | ErrorCode::Io | ErrorCode::Unsupported => {
            FileErrorKind::Invalid
        }
        _ => return None,
    };
    Some(FileError {
        kind,
        message: body.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_proto::ErrorBody;

    #[test]
    fn paths_are_checked() {
        assert!(check_path("/etc/hosts").is_ok());
        assert!(check_path("/").is_ok());
        for bad in ["etc/hosts", "", "/a\0b"] {
            assert_eq!(check_path(bad).unwrap_err().kind, FileErrorKind::Invalid);
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert!(check_path(&long).is_err());
    }

    #[test]
    fn agent_answers_are_classified() {
        let e = |code| agent::Error::Agent(ErrorBody::new(code, "/x: nope"));
        assert_eq!(
            classify(&e(ErrorCode::NotFound)).map(|f| f.kind),
            Some(FileErrorKind::NotFound)
        );
        assert_eq!(
            classify(&e(ErrorCode::PermissionDenied)).map(|f| f.kind),
            Some(FileErrorKind::PermissionDenied)
        );
        assert_eq!(
            classify(&e(ErrorCode::Io)).map(|f| f.message),
            Some("/x: nope".to_string())
        );
        assert_eq!(classify(&e(ErrorCode::Internal)), None);
        assert_eq!(classify(&agent::Error::Disconnected), None);
    }
}
