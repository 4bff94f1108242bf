//! Copying single files into and out of a container. Paths resolve inside
//! the container's root as the workload sees it (its /tmp included), with
//! `openat2(RESOLVE_IN_ROOT)`, so `..` and symlinks planted by the
//! workload cannot reach the agent's own filesystem.

use std::fs::File;
use std::sync::Arc;

use cocoon_proto::{ErrorBody, ErrorCode, Frame, Response};

use crate::conn::Conn;
use crate::container;
use crate::sys::open_in_root;

fn refuse(conn: &Arc<Conn>, id: u32, stream: u32, e: ErrorBody) {
    conn.send(&Frame::Close { stream });
    conn.respond(id, Err(e));
}

fn check_path(path: &str) -> Result<(), ErrorBody> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ErrorBody::new(
            ErrorCode::InvalidArgument,
            format!("path {path:?} must be absolute"),
        ));
    }
    Ok(())
}

fn tar_unsupported() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unsupported,
        "tar copies are not supported yet; copy single files",
    )
}

fn open_err(path: &str, e: std::io::Error) -> ErrorBody {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EACCES) | Some(libc::EPERM) => ErrorCode::PermissionDenied,
        Some(libc::EXDEV) | Some(libc::ELOOP) => ErrorCode::InvalidArgument,
        _ => ErrorCode::Io,
    };
    ErrorBody::new(code, format!("{path}: {e}"))
}

/// Writes the host's stream into `path` (created or truncated, `mode`).
pub fn copy_in(
    conn: &Arc<Conn>,
    id: u32,
    container_id: &str,
    path: &str,
    stream: u32,
    tar: bool,
    mode: u32,
) {
    if conn.stream_in_use(stream) {
        return conn.respond(
            id,
            Err(ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("stream {stream} is in use"),
            )),
        );
    }
    let opened = (|| {
        check_path(path)?;
        if tar {
            return Err(tar_unsupported());
        }
        let root = container::get(container_id)?.root_fd()?;
        let fd = open_in_root(
            &root,
            path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            mode,
        )
        .map_err(|e| open_err(path, e))?;
        Ok(File::from(fd))
    })();
    match opened {
        Err(e) => refuse(conn, id, stream, e),
        Ok(file) => {
            let c = conn.clone();
            let path = path.to_string();
            conn.pump_in(
                stream,
                file,
                Some(Box::new(move |r| {
                    c.respond(
                        id,
                        r.map(|_| Response::Done).map_err(|e| open_err(&path, e)),
                    );
                })),
            );
        }
    }
}

/// Sends the file at `path` on `stream`.
pub fn copy_out(conn: &Arc<Conn>, id: u32, container_id: &str, path: &str, stream: u32, tar: bool) {
    if conn.stream_in_use(stream) {
        return conn.respond(
            id,
            Err(ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("stream {stream} is in use"),
            )),
        );
    }
    let opened = (|| {
        check_path(path)?;
        if tar {
            return Err(tar_unsupported());
        }
        let root = container::get(container_id)?.root_fd()?;
        let fd = open_in_root(&root, path, libc::O_RDONLY, 0).map_err(|e| open_err(path, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| open_err(path, e))?;
        if !meta.is_file() {
            return Err(ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("{path} is not a regular file"),
            ));
        }
        Ok(file)
    })();
    match opened {
        Err(e) => refuse(conn, id, stream, e),
        Ok(file) => {
            let c = conn.clone();
            let path = path.to_string();
            conn.pump_out(
                stream,
                file,
                Some(Box::new(move |r| {
                    c.respond(
                        id,
                        r.map(|_| Response::Done).map_err(|e| open_err(&path, e)),
                    );
                })),
            );
        }
    }
}
