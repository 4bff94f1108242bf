//! A sandbox's log: what its init process wrote on stdout and stderr, in
//! the order it arrived, in one file.
//!
//! Each record is a 5-byte header (stream: 1 stdout, 2 stderr; length,
//! big-endian u32) and the bytes. Reading skips a torn last record (a crash
//! mid-write). The file is capped at [`LOG_LIMIT`]: output past it is
//! dropped and counted, not rotated (rotation is not built yet).
//! [`LogReader`] reads a log as it grows, for `logs --follow` and attach.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

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
    /// The stream's number in the log (and in the streaming API's frames):
    /// 1 stdout, 2 stderr.
    pub fn tag(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }

    /// The stream with number `tag`.
    pub fn from_tag(tag: u8) -> Option<LogStream> {
        match tag {
            1 => Some(LogStream::Stdout),
            2 => Some(LogStream::Stderr),
            _ => None,
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

/// Bytes of stdout and stderr a log holds, after cutting off a torn last
/// record (a daemon killed mid-write) so that appends go on from a whole
/// one. Only headers are read. A missing file holds nothing.
pub fn stored_bytes(path: &Path) -> io::Result<[u64; 2]> {
    let f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok([0, 0]),
        Err(e) => return Err(e),
    };
    let (end, totals) = walk_records(&f)?;
    if end < f.metadata()?.len() {
        f.set_len(end)?;
    }
    Ok(totals)
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

/// The first whole record of `raw`: its tag, its bytes and its length
/// with the header; `None` when `raw` holds only part of one.
fn split_record(raw: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = raw.get(..HEADER)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let data = raw.get(HEADER..HEADER + len)?;
    Some((header[0], data, HEADER + len))
}

fn decode(mut raw: &[u8], want: Option<LogStream>) -> Vec<u8> {
    let mut out = Vec::new();
    // A torn last record ends the loop.
    while let Some((tag, data, used)) = split_record(raw) {
        if want.is_none_or(|w| w.tag() == tag) {
            out.extend_from_slice(data);
        }
        raw = &raw[used..];
    }
    out
}

/// Reads a log as it is appended to: each [`read`](Self::read) returns the
/// whole records written since the previous one; a record still being
/// written waits for the next call. A log that does not exist yet is read
/// from its start once it does.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: Option<File>,
    /// Bytes read that do not make a whole record yet.
    pending: Vec<u8>,
    want: Option<LogStream>,
}

impl LogReader {
    /// A reader of `path` keeping the streams in `want` (both when `None`),
    /// from the log's start, or from its current end (its last whole
    /// record) when `from_start` is false.
    pub fn open(path: &Path, want: Option<LogStream>, from_start: bool) -> io::Result<LogReader> {
        let mut r = LogReader {
            path: path.to_owned(),
            file: None,
            pending: Vec::new(),
            want,
        };
        r.reopen()?;
        if let (false, Some(f)) = (from_start, &mut r.file) {
            let (end, _) = walk_records(f)?;
            f.seek(SeekFrom::Start(end))?;
        }
        Ok(r)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The records appended since the last call (at most about `max`
    /// bytes of them, more only to finish a record), in order; `None` at
    /// the end of the log. The list may be empty when the bytes read were
    /// only part of a record or of a stream not wanted.
    pub fn read(&mut self, max: usize) -> io::Result<Option<Vec<(LogStream, Bytes)>>> {
        self.reopen()?;
        let Some(f) = &mut self.file else {
            return Ok(None);
        };
        let start = self.pending.len();
        self.pending.resize(start + max.max(HEADER), 0);
        let n = match f.read(&mut self.pending[start..]) {
            Ok(n) => n,
            Err(e) => {
                self.pending.truncate(start);
                return Err(e);
            }
        };
        self.pending.truncate(start + n);
        if n == 0 {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut used = 0;
        while let Some((tag, data, len)) = split_record(&self.pending[used..]) {
            let stream = LogStream::from_tag(tag);
            if let Some(s) = stream.filter(|s| self.want.is_none_or(|w| w == *s)) {
                out.push((s, Bytes::copy_from_slice(data)));
            }
            used += len;
        }
        self.pending.drain(..used);
        Ok(Some(out))
    }
}

/// The offset just past the last whole record, and the data bytes of
/// stdout and stderr up to there, found by hopping from header to header
/// (the data is not read).
fn walk_records(f: &File) -> io::Result<(u64, [u64; 2])> {
    let size = f.metadata()?.len();
    let mut pos = 0u64;
    let mut totals = [0u64; 2];
    let mut header = [0u8; HEADER];
    while pos + HEADER as u64 <= size {
        f.read_exact_at(&mut header, pos)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as u64;
        let next = pos + HEADER as u64 + len;
        if next > size {
            break;
        }
        match LogStream::from_tag(header[0]) {
            Some(LogStream::Stdout) => totals[0] += len,
            Some(LogStream::Stderr) => totals[1] += len,
            None => {}
        }
        pos = next;
    }
    Ok((pos, totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_count_each_stream_and_cut_a_torn_record() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        assert_eq!(stored_bytes(&path)?, [0, 0]);
        let w = LogWriter::open(&path)?;
        w.append(LogStream::Stdout, b"one\n")?;
        w.append(LogStream::Stderr, b"e\n")?;
        w.append(LogStream::Stdout, b"two\n")?;
        drop(w);
        let whole = std::fs::metadata(&path)?.len();
        assert_eq!(stored_bytes(&path)?, [8, 2]);
        // A record cut short by a crash: header and part of its bytes.
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(&[1, 0, 0, 0, 9, b'x', b'y'])?;
        drop(f);
        assert_eq!(stored_bytes(&path)?, [8, 2]);
        assert_eq!(std::fs::metadata(&path)?.len(), whole);
        let w = LogWriter::open(&path)?;
        w.append(LogStream::Stdout, b"three\n")?;
        assert_eq!(
            read_log(&path, Some(LogStream::Stdout))?,
            b"one\ntwo\nthree\n"
        );
        Ok(())
    }

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
    fn reader_follows_appends_and_waits_for_whole_records() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        let mut from_start = LogReader::open(&path, None, true)?;
        assert_eq!(from_start.read(1024)?, None, "no log yet");
        let w = LogWriter::open(&path)?;
        w.append(LogStream::Stdout, b"one\n")?;
        let mut from_end = LogReader::open(&path, Some(LogStream::Stderr), false)?;
        let mut only_out = LogReader::open(&path, Some(LogStream::Stdout), true)?;
        w.append(LogStream::Stderr, b"err\n")?;
        assert_eq!(
            from_start.read(1024)?,
            Some(vec![
                (LogStream::Stdout, Bytes::from_static(b"one\n")),
                (LogStream::Stderr, Bytes::from_static(b"err\n"))
            ])
        );
        assert_eq!(from_start.read(1024)?, None);
        assert_eq!(
            from_end.read(1024)?,
            Some(vec![(LogStream::Stderr, Bytes::from_static(b"err\n"))])
        );
        assert_eq!(
            only_out.read(1024)?,
            Some(vec![(LogStream::Stdout, Bytes::from_static(b"one\n"))])
        );
        // A record written in two parts (a torn write seen mid-way) comes
        // out whole, once.
        let mut raw = OpenOptions::new().append(true).open(&path)?;
        raw.write_all(&[1, 0, 0, 0, 6, b'h', b'a'])?;
        assert_eq!(from_start.read(1024)?, Some(Vec::new()));
        let mut late = LogReader::open(&path, None, false)?;
        raw.write_all(b"lf\n\n")?;
        assert_eq!(
            from_start.read(1024)?,
            Some(vec![(LogStream::Stdout, Bytes::from_static(b"half\n\n"))])
        );
        // Opened at the end while the record was torn: starts before it.
        assert_eq!(late.read(1024)?.map(|v| v.len()), Some(1));
        // Small reads still make progress through a large record.
        w.append(LogStream::Stdout, &[7u8; 100])?;
        let mut got = Vec::new();
        while let Some(v) = from_start.read(8)? {
            got.extend(v);
        }
        assert_eq!(got, vec![(LogStream::Stdout, Bytes::from(vec![7u8; 100]))]);
        Ok(())
    }

    #[test]
    fn torn_tail_is_ignored() {
        let mut raw = vec![1, 0, 0, 0, 2, b'h', b'i'];
        raw.extend_from_slice(&[2, 0, 0, 0, 9, b'x']);
        assert_eq!(decode(&raw, None), b"hi");
    }
}
