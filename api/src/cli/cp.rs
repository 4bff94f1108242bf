//! `cocoon cp`: copies files and directories between the local machine and
//! a running sandbox, as `docker cp` does.
//!
//! A single file travels as itself (`format=raw`); a directory as a tar
//! stream (`format=tar`) packed and unpacked on this side. What comes out of
//! a sandbox is untrusted: archives are unpacked by the `tar` crate's
//! `unpack`, which refuses entries that would land outside the destination
//! (`..`, absolute paths, writes through symlinks) and does not restore
//! owners or set-id bits.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use cocoon_proto::{FileKind, PathInfo};

use crate::client::{encode_query, encode_segment, Client, ClientError};

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path here (`-` is a tar stream on stdin or stdout).
    Local(PathBuf),
    /// `ID:PATH` in a sandbox.
    Sandbox {
        /// The sandbox.
        id: String,
        /// Absolute path inside it.
        path: String,
    },
}

impl Location {
    /// Parses `ID:PATH` or a local path, as Docker does: a colon before
    /// any `/` names a sandbox (write `./a:b` for a local file `a:b`).
    pub fn parse(s: &str) -> Location {
        match s.split_once(':') {
            Some((id, path)) if !id.is_empty() && !id.contains('/') => Location::Sandbox {
                id: id.to_string(),
                path: path.to_string(),
            },
            _ => Location::Local(PathBuf::from(s)),
        }
    }
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    /// The arguments do not make a copy.
    #[error("{0}")]
    Usage(String),
    /// The daemon refused or failed.
    #[error(transparent)]
    Api(#[from] ClientError),
    /// A local file could not be read or written.
    #[error("{what} {path}: {source}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn local(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CpError {
    let path = path.to_owned();
    move |source| CpError::Local { what, path, source }
}

/// Copies `src` to `dst`; one of them must be in a sandbox. Returns what
/// was done, for people.
pub async fn copy(client: &Client, src: &str, dst: &str) -> Result<String, CpError> {
    match (Location::parse(src), Location::parse(dst)) {
        (Location::Local(from), Location::Sandbox { id, path }) => {
            check_sandbox_path(&path)?;
            upload(client, &from, &id, &path).await
        }
        (Location::Sandbox { id, path }, Location::Local(to)) => {
            check_sandbox_path(&path)?;
            download(client, &id, &path, &to).await
        }
        _ => Err(CpError::Usage(
            "give one local path and one ID:PATH in a sandbox".into(),
        )),
    }
}

fn check_sandbox_path(path: &str) -> Result<(), CpError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(CpError::Usage(format!(
            "{path:?}: give an absolute path inside the sandbox"
        )))
    }
}

fn files_url(id: &str, path: &str, query: &str) -> String {
    format!(
        "/v1/sandboxes/{}/files?path={}{query}",
        encode_segment(id),
        encode_query(path)
    )
}

/// The last component of a path, if it has a usable one.
fn base_name(path: &Path) -> Option<PathBuf> {
    match path.components().next_back()? {
        Component::Normal(n) => Some(PathBuf::from(n)),
        _ => None,
    }
}

/// A request body fed by a blocking writer (a tar builder) through a
/// bounded channel.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "request ended"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body read by a blocking reader (a tar unpacker).
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn channel_body(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let frames = tokio_stream_from(rx).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(frames))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A tar of `src` (a file or a directory tree, symlinks kept as links)
/// whose top entry is named `name`, streamed as a request body.
fn tar_body(src: PathBuf, name: PathBuf) -> Body {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let err = tx.clone();
        let r = (|| {
            let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(
                256 << 10,
                ChannelWriter(tx),
            ));
            b.follow_symlinks(false);
            if std::fs::symlink_metadata(&src)?.is_dir() {
                b.append_dir_all(&name, &src)?;
            } else {
                b.append_path_with_name(&src, &name)?;
            }
            b.into_inner()?.flush()
        })();
        if let Err(e) = r {
            let _ = err.blocking_send(Err(std::io::Error::new(
                e.kind(),
                format!("packing {}: {e}", src.display()),
            )));
        }
    });
    channel_body(rx)
}

/// A local file streamed as a request body.
async fn file_body(path: &Path) -> Result<Body, CpError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(local("open", path))?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut file = file;
        loop {
            let mut buf = bytes::BytesMut::with_capacity(256 << 10);
            match file.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    Ok(channel_body(rx))
}

/// Stdin as a request body.
fn stdin_body() -> Body {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; 256 << 10];
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    channel_body(rx)
}

/// What `path` in the sandbox is; `None` when it does not exist.
async fn stat(client: &Client, id: &str, path: &str) -> Result<Option<PathInfo>, ClientError> {
    let url = format!(
        "/v1/sandboxes/{}/files/stat?path={}",
        encode_segment(id),
        encode_query(path)
    );
    match client
        .json::<PathInfo>(Method::GET, &url, None::<&()>)
        .await
    {
        Ok(info) => Ok(Some(info)),
        Err(ClientError::Api { status, code, .. })
            if status == http::StatusCode::NOT_FOUND && code == "file_not_found" =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn put(
    client: &Client,
    id: &str,
    path: &str,
    query: &str,
    body: Body,
) -> Result<(), ClientError> {
    client
        .send(
            Method::PUT,
            &files_url(id, path, query),
            Some("application/octet-stream"),
            None,
            body,
        )
        .await
        .map(drop)
}

/// The parent directory and last component of an absolute sandbox path.
fn split_sandbox_path(path: &str) -> Option<(String, PathBuf)> {
    let p = Path::new(path);
    let name = base_name(p)?;
    let parent = p.parent()?.display().to_string();
    Some((parent, name))
}

async fn upload(client: &Client, from: &Path, id: &str, to: &str) -> Result<String, CpError> {
    if from == Path::new("-") {
        put(client, id, to, "&format=tar", stdin_body()).await?;
        return Ok(format!("unpacked stdin into {id}:{to}"));
    }
    let meta = std::fs::metadata(from).map_err(local("read", from))?;
    let name = base_name(from)
        .ok_or_else(|| CpError::Usage(format!("{}: name a file or directory", from.display())))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(CpError::Usage(format!(
            "{}: only files and directories can be copied",
            from.display()
        )));
    }
    // Like docker cp: into `to` when it is a directory, else as `to`.
    let target = match stat(client, id, to).await? {
        Some(info) if info.kind == FileKind::Directory => {
            format!("{}/{}", to.trim_end_matches('/'), name.display())
        }
        Some(_) if to.ends_with('/') || meta.is_dir() => {
            return Err(CpError::Usage(format!(
                "{id}:{to} exists and is not a directory"
            )))
        }
        Some(_) => to.to_string(),
        None if to.ends_with('/') => {
            return Err(CpError::Usage(format!("{id}:{to}: no such directory")))
        }
        None => to.to_string(),
    };
    if meta.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mode = format!("&mode={:o}", meta.permissions().mode() & 0o7777);
        put(client, id, &target, &mode, file_body(from).await?).await?;
    } else {
        let (parent, new_name) = split_sandbox_path(&target)
            .ok_or_else(|| CpError::Usage(format!("{id}:{target}: not a usable path")))?;
        let body = tar_body(from.to_owned(), new_name);
        put(client, id, &parent, "&format=tar", body).await?;
    }
    Ok(format!("{} -> {id}:{target}", from.display()))
}

async fn download(client: &Client, id: &str, from: &str, to: &Path) -> Result<String, CpError> {
    let resp = client
        .send(
            Method::GET,
            &files_url(id, from, "&format=tar"),
            None,
            None,
            BodyExt::boxed(http_body_util::Empty::new().map_err(|never| match never {})),
        )
        .await?;
    let (tx, rx) = mpsc::channel(8);
    let mut body = resp.into_body().into_data_stream();
    let pump = async move {
        while let Some(chunk) = body.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(format!("download: {e}")));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let to = to.to_owned();
    let source = base_name(Path::new(from)).unwrap_or_else(|| PathBuf::from("."));
    let unpack = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            buf: Bytes::new(),
        };
        unpack(reader, &source, &to)
    });
    let ((), r) = tokio::join!(pump, unpack);
    r.map_err(|e| CpError::Usage(format!("unpacking failed: {e}")))?
        .map(|to| format!("{id}:{from} -> {}", to.display()))
}

/// Unpacks a tar whose top entry is `source` to `to`: into `to` when it is
/// a directory, else as `to` itself; `-` writes the tar to stdout.
fn unpack(mut reader: ChannelReader, source: &Path, to: &Path) -> Result<PathBuf, CpError> {
    if to == Path::new("-") {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut reader, &mut out).map_err(local("write", to))?;
        out.flush().map_err(local("write", to))?;
        return Ok(to.to_owned());
    }
    if to.is_dir() {
        tar::Archive::new(reader)
            .unpack(to)
            .map_err(local("unpack into", to))?;
        return Ok(to.join(source));
    }
    // Unpack next to `to`, then move the one top entry into place.
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cocoon-cp-")
        .tempdir_in(&parent)
        .map_err(local("create a directory in", &parent))?;
    tar::Archive::new(reader)
        .unpack(tmp.path())
        .map_err(local("unpack into", &parent))?;
    let top = tmp.path().join(source);
    std::fs::symlink_metadata(&top).map_err(|_| {
        CpError::Usage(format!(
            "the sandbox sent no {} (unexpected archive)",
            source.display()
        ))
    })?;
    std::fs::rename(&top, to).map_err(local("move into place", to))?;
    Ok(to.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_like_docker() {
        assert_eq!(
            Location::parse("abc:/etc/hosts"),
            Location::Sandbox {
                id: "abc".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            Location::parse("./a:b"),
            Location::Local(PathBuf::from("./a:b"))
        );
        assert_eq!(Location::parse("/tmp/x"), Location::Local("/tmp/x".into()));
        assert_eq!(Location::parse("-"), Location::Local("-".into()));
        assert_eq!(Location::parse(":x"), Location::Local(":x".into()));
    }

    #[test]
    fn sandbox_paths_split() {
        assert_eq!(
            split_sandbox_path("/tmp/new"),
            Some(("/tmp".to_string(), PathBuf::from("new")))
        );
        assert_eq!(
            split_sandbox_path("/top"),
            Some(("/".to_string(), PathBuf::from("top")))
        );
        assert_eq!(split_sandbox_path("/"), None);
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name(Path::new("/a/b")), Some(PathBuf::from("b")));
        assert_eq!(base_name(Path::new("b/")), Some(PathBuf::from("b")));
        assert_eq!(base_name(Path::new("/")), None);
        assert_eq!(base_name(Path::new("..")), None);
    }

    fn reader_of(data: Vec<u8>) -> ChannelReader {
        let (tx, rx) = mpsc::channel(data.len() / 1000 + 2);
        for c in data.chunks(1000) {
            tx.try_send(Ok(Bytes::copy_from_slice(c))).unwrap();
        }
        ChannelReader {
            rx,
            buf: Bytes::new(),
        }
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o6755);
            h.set_entry_type(tar::EntryType::Regular);
            // Raw names: the builder's own checks would refuse `..`.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn download_renames_or_goes_into_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_of(&[("hosts", b"127.0.0.1 localhost\n")]);
        // Into an existing directory.
        let got = unpack(reader_of(data.clone()), Path::new("hosts"), dir.path()).unwrap();
        assert_eq!(got, dir.path().join("hosts"));
        assert_eq!(
            std::fs::read(dir.path().join("hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        // As a new name.
        let to = dir.path().join("renamed");
        unpack(reader_of(data), Path::new("hosts"), &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"127.0.0.1 localhost\n");
        // No temporary directory is left.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn hostile_archives_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let data = tar_of(&[("x/../../escaped", b"evil"), ("x/ok", b"fine")]);
        let _ = unpack(reader_of(data), Path::new("x"), &inner);
        assert!(!dir.path().join("escaped").exists());
        // Set-id bits are not restored.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(inner.join("x/ok"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o6000, 0, "{mode:o}");
    }

    #[test]
    fn a_missing_top_entry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_of(&[("other", b"x")]);
        let e = unpack(reader_of(data), Path::new("hosts"), &dir.path().join("new")).unwrap_err();
        assert!(e.to_string().contains("sent no hosts"), "{e}");
    }
}
