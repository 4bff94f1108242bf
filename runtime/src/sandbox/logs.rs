//! A sandbox's log: what its init process wrote on stdout and stderr, in
//! the order it arrived, in one file.
//!
//! Each record is a 5-byte header (stream: 1 stdout, 2 stderr; length,
//! big-endian u32) and the bytes. Reading skips a torn last record (a crash
//! mid-write). The file is capped at [`LOG_LIMIT`]: output past it is
//! dropped and counted, not rotated (rotation is not built yet).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most bytes a sandbox's log holds.
pub const LOG_LIMIT: u64 = 64 << 20;

const HEADER: usize = 5;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    fn tag(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }
}

/// Appends records to a log file; shared by the stdout and stderr pumps.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    inner: Mutex<WriterState>,
}

#[derive(Debug)]
struct WriterState {
    file: File,
    size: u64,
    dropped: u64,
}

impl LogWriter {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(false)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            inner: Mutex::new(WriterState {
                file,
                size,
                dropped: 0,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` from `stream`, unless the log is full.
    pub fn append(&self, stream: LogStream, data: &[u8]) -> io::Result<()> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in data.chunks(u32::MAX as usize) {
            let len = (HEADER + chunk.len()) as u64;
            if st.size + len > LOG_LIMIT {
                st.dropped += chunk.len() as u64;
                continue;
            }
            let mut rec = Vec::with_capacity(HEADER + chunk.len());
            rec.push(stream.tag());
            rec.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            rec.extend_from_slice(chunk);
            st.file.write_all(&rec)?;
            st.size += len;
        }
        Ok(())
    }

    /// Bytes dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

/// Reads a log, keeping the streams in `want` (both when `None`), as the
/// concatenation of their bytes. A missing file is an empty log.
pub fn read_log(path: &Path, want: Option<LogStream>) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    match File::open(path) {
        Ok(f) => {
            f.take(LOG_LIMIT).read_to_end(&mut raw)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(decode(&raw, want))
}

fn decode(mut raw: &[u8], want: Option<LogStream>) -> Vec<u8> {
    let mut out = Vec::new();
    while raw.len() >= HEADER {
        let tag = raw[0];
        let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
        let Some(data) = raw.get(HEADER..HEADER + len) else {
            break; // torn last record
        };
        if want.is_none_or(|w| w.tag() == tag) {
            out.extend_from_slice(data);
        }
        raw = &raw[HEADER + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_interleave_and_filter() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        let w = LogWriter::open(&path)?;
        w.append(LogStream::Stdout, b"one\n")?;
        w.append(LogStream::Stderr, b"err\n")?;
        w.append(LogStream::Stdout, b"two\n")?;
        assert_eq!(read_log(&path, None)?, b"one\nerr\ntwo\n");
        assert_eq!(read_log(&path, Some(LogStream::Stdout))?, b"one\ntwo\n");
        assert_eq!(read_log(&path, Some(LogStream::Stderr))?, b"err\n");
        assert_eq!(read_log(&dir.path().join("none"), None)?, b"");
        Ok(())
    }

    #[test]
    fn torn_tail_is_ignored() {
        let mut raw = vec![1, 0, 0, 0, 2, b'h', b'i'];
        raw.extend_from_slice(&[2, 0, 0, 0, 9, b'x']);
        assert_eq!(decode(&raw, None), b"hi");
    }
}
