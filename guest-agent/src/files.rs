//! Copying files and tar streams into and out of a container. Paths resolve inside
//! the container's root as the workload sees it (its /tmp included), with
//! `openat2(RESOLVE_IN_ROOT)` (single files) or inside the container's
//! mount namespace (tar streams), so `..` and symlinks planted by the
//! workload cannot reach the agent's own filesystem.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use cocoon_proto::{ErrorBody, ErrorCode, FileKind, Frame, PathInfo, Response};

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

/// A tar copy runs the agent's `tar-in`/`tar-out` helper inside the
/// container (its mount namespace and root), so every path, `..` and
/// symlink resolves as the workload sees it and never outside.
struct TarJob {
    slot: Arc<crate::reaper::ExitSlot>,
    stderr: File,
}

impl TarJob {
    fn start(
        container_id: &str,
        args: &[&str],
        ours_is_stdin: bool,
    ) -> Result<(TarJob, File), ErrorBody> {
        let c = container::get(container_id)?;
        let pipe =
            || crate::sys::pipe().map_err(|e| ErrorBody::new(ErrorCode::Io, format!("pipe: {e}")));
        let (data_r, data_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let null = crate::sys::open("/dev/null", libc::O_RDWR)
            .map_err(|e| ErrorBody::new(ErrorCode::Io, format!("/dev/null: {e}")))?;
        let (stdio, ours) = if ours_is_stdin {
            ([data_r, null, err_w], data_w)
        } else {
            ([null, data_w, err_w], data_r)
        };
        let slot = c.helper(args, stdio)?;
        Ok((
            TarJob {
                slot,
                stderr: File::from(err_r),
            },
            File::from(ours),
        ))
    }

    /// Waits for the helper; its stderr is the error message.
    fn finish(self) -> Result<(), ErrorBody> {
        use std::io::Read;
        let mut msg = String::new();
        let _ = (&self.stderr).take(4096).read_to_string(&mut msg);
        let (code, signal) = crate::reaper::decode(self.slot.wait());
        if code == Some(0) {
            return Ok(());
        }
        let msg = msg.trim();
        let kind = if msg.contains("No such file") {
            ErrorCode::NotFound
        } else {
            ErrorCode::Io
        };
        Err(ErrorBody::new(
            kind,
            if msg.is_empty() {
                format!("tar helper failed (code {code:?}, signal {signal:?})")
            } else {
                msg.to_string()
            },
        ))
    }
}

/// Entry of the `tar-in DIR` and `tar-out PATH` helpers (run inside the
/// container by `TarJob`): a tar stream on stdin unpacked into DIR, or PATH
/// (a file or a directory tree, links not followed) packed to stdout.
#[cfg_attr(test, allow(dead_code))]
pub fn tar_main(args: &[String]) -> ! {
    let r = match args {
        [cmd, dir] if cmd == "tar-in" => tar_in(dir),
        [cmd, path] if cmd == "tar-out" => tar_out(path),
        _ => Err(std::io::Error::other("usage: tar-in DIR | tar-out PATH")),
    };
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

#[cfg_attr(test, allow(dead_code))]
fn tar_in(dir: &str) -> std::io::Result<()> {
    let meta =
        std::fs::metadata(dir).map_err(|e| std::io::Error::new(e.kind(), format!("{dir}: {e}")))?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!("{dir} is not a directory")));
    }
    let mut a = tar::Archive::new(std::io::stdin().lock());
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.unpack(dir).map_err(|e| {
        // The tar crate puts the cause in source(); say it.
        let mut msg = format!("unpacking into {dir}: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        std::io::Error::new(e.kind(), msg)
    })
}

#[cfg_attr(test, allow(dead_code))]
fn tar_out(path: &str) -> std::io::Result<()> {
    let p = std::path::Path::new(path);
    let meta = std::fs::symlink_metadata(p)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let name = p
        .file_name()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ".".into());
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(
        256 * 1024,
        std::io::stdout().lock(),
    ));
    b.follow_symlinks(false);
    if meta.is_dir() {
        append_tree(&mut b, p, &name, meta.dev())?;
    } else {
        b.append_path_with_name(p, &name)?;
    }
    b.into_inner()?.flush()
}

/// Appends the directory `dir` as `name` and what is under it, staying on
/// the file system `dev` like `tar --one-file-system`: a mount point (such
/// as /proc, /sys or /dev in a copy of `/`) is archived as an empty
/// directory, since the pseudo-files below have no end or cannot be read.
/// Sockets are skipped: they cannot be archived.
#[cfg_attr(test, allow(dead_code))]
fn append_tree<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    dir: &std::path::Path,
    name: &std::path::Path,
    dev: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    b.append_path_with_name(dir, name)?;
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let inner = name.join(e.file_name());
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if meta.dev() == dev {
                append_tree(b, &path, &inner, dev)?;
            } else {
                b.append_path_with_name(&path, &inner)?;
            }
        } else if !meta.file_type().is_socket() {
            b.append_path_with_name(&path, &inner)?;
        }
    }
    Ok(())
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

/// What a finished stream turns into: the answer to the request.
type Finish = Box<dyn FnOnce(std::io::Result<u64>) -> Result<Response, ErrorBody> + Send>;

/// Describes `path` in the container, without following a final symlink.
pub fn stat(container_id: &str, path: &str) -> Result<PathInfo, ErrorBody> {
    check_path(path)?;
    let root = container::get(container_id)?.root_fd()?;
    let fd = open_in_root(&root, path, libc::O_PATH | libc::O_NOFOLLOW, 0)
        .map_err(|e| open_err(path, e))?;
    let st = crate::sys::fstat(&fd).map_err(|e| open_err(path, e))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let link_target = if kind == FileKind::Symlink {
        Some(
            crate::sys::readlink_fd(&fd)
                .map_err(|e| open_err(path, e))?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(PathInfo {
        kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
        link_target,
    })
}

/// Opens what a copy reads from or writes to: the tar helper's pipe, or
/// the file itself (created with `mode` when `create`).
fn open_copy(
    container_id: &str,
    path: &str,
    tar: bool,
    create: Option<u32>,
) -> Result<(File, Finish), ErrorBody> {
    check_path(path)?;
    if tar {
        let (cmd, ours_is_stdin) = if create.is_some() {
            ("tar-in", true)
        } else {
            ("tar-out", false)
        };
        let (job, file) = TarJob::start(container_id, &[cmd, path], ours_is_stdin)?;
        // When the stream ends our end of the pipe is closed: the helper
        // sees EOF (tar-in) or has written everything (tar-out).
        return Ok((
            file,
            Box::new(move |_| job.finish().map(|()| Response::Done)),
        ));
    }
    let root = container::get(container_id)?.root_fd()?;
    let (flags, mode) = match create {
        Some(mode) => (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, mode),
        None => (libc::O_RDONLY, 0),
    };
    let file = File::from(open_in_root(&root, path, flags, mode).map_err(|e| open_err(path, e))?);
    if create.is_none() {
        let meta = file.metadata().map_err(|e| open_err(path, e))?;
        if !meta.is_file() {
            return Err(ErrorBody::new(
                ErrorCode::InvalidArgument,
                format!("{path} is not a regular file"),
            ));
        }
    }
    let path = path.to_string();
    Ok((
        file,
        Box::new(move |r| r.map(|_| Response::Done).map_err(|e| open_err(&path, e))),
    ))
}

/// Starts a copy: into the container (`create` = Some(mode)) from the
/// host's stream, or out of it onto the stream. Answers request `id` when
/// the stream has ended.
fn copy(
    conn: &Arc<Conn>,
    id: u32,
    container_id: &str,
    path: &str,
    stream: u32,
    tar: bool,
    create: Option<u32>,
) {
    if conn.stream_in_use(stream) {
        let e = ErrorBody::new(
            ErrorCode::InvalidArgument,
            format!("stream {stream} is in use"),
        );
        return conn.respond(id, Err(e));
    }
    match open_copy(container_id, path, tar, create) {
        Err(e) => refuse(conn, id, stream, e),
        Ok((file, finish)) => {
            let c = conn.clone();
            let on_finish =
                Some(Box::new(move |r| c.respond(id, finish(r))) as crate::conn::OnFinish);
            if create.is_some() {
                conn.pump_in(stream, file, on_finish);
            } else {
                conn.pump_out(stream, file, on_finish);
            }
        }
    }
}

/// Writes the host's stream into `path` (a file created or truncated with
/// `mode`, or a directory a tar stream is unpacked into).
pub fn copy_in(
    conn: &Arc<Conn>,
    id: u32,
    container_id: &str,
    path: &str,
    stream: u32,
    tar: bool,
    mode: u32,
) {
    copy(conn, id, container_id, path, stream, tar, Some(mode));
}

/// Sends the file at `path`, or a tar stream of `path`, on `stream`.
pub fn copy_out(conn: &Arc<Conn>, id: u32, container_id: &str, path: &str, stream: u32, tar: bool) {
    copy(conn, id, container_id, path, stream, tar, None);
}
