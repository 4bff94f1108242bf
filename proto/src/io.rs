//! Reading and writing whole frames on byte streams.
//!
//! Blocking helpers over `std::io` (for the agent) and, with the `tokio`
//! feature, async helpers over tokio's `AsyncRead`/`AsyncWrite` (for the
//! host). Each reads the 12-byte header first and refuses an oversized or
//! malformed header before reading any payload, so a hostile peer cannot
//! make the reader allocate more than [`MAX_FRAME_PAYLOAD`] bytes.
//!
//! The readers are not cancel-safe (a frame half read when an async read is
//! dropped is lost); give each connection one reading loop that owns the
//! reader.

use std::io::{self, Read, Write};

use bytes::Bytes;
use thiserror::Error;

use crate::frame::{DecodeError, EncodeError, Frame, Header, HEADER_LEN, MAX_FRAME_PAYLOAD};

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum WireError {
    /// The underlying stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a valid frame.
    #[error("invalid frame from peer: {0}")]
    Decode(#[from] DecodeError),
    /// The frame to send could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(#[from] EncodeError),
    /// The stream ended inside a frame.
    #[error("connection closed after {got} of {want} bytes of a frame")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        got: usize,
        /// Bytes the frame needed.
        want: usize,
    },
}

/// Writes one frame and flushes.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), WireError> {
    let bytes = frame.to_vec()?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly at a frame
/// boundary.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, WireError> {
    let mut hdr = [0u8; HEADER_LEN];
    let got = read_full(r, &mut hdr)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(WireError::Truncated {
            got,
            want: HEADER_LEN,
        });
    }
    let header = Header::parse(&hdr)?;
    let mut payload = vec![0u8; header.len as usize];
    let got = read_full(r, &mut payload)?;
    if got < payload.len() {
        return Err(WireError::Truncated {
            got: HEADER_LEN + got,
            want: HEADER_LEN + payload.len(),
        });
    }
    Ok(Some(Frame::from_parts(&header, Bytes::from(payload))?))
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

// Keep the limit visible next to the readers that rely on it.
const _: () = assert!(MAX_FRAME_PAYLOAD <= u32::MAX as usize);

/// Async twins of [`write_frame`] and [`read_frame`].
#[cfg(feature = "tokio")]
mod async_io {
    use bytes::Bytes;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::WireError;
    use crate::frame::{Frame, Header, HEADER_LEN};

    /// Writes one frame and flushes.
    pub async fn write_frame_async<W: AsyncWrite + Unpin + ?Sized>(
        w: &mut W,
        frame: &Frame,
    ) -> Result<(), WireError> {
        let bytes = frame.to_vec()?;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Reads one frame. `Ok(None)` means the stream ended cleanly at a frame
    /// boundary. Not cancel-safe.
    pub async fn read_frame_async<R: AsyncRead + Unpin + ?Sized>(
        r: &mut R,
    ) -> Result<Option<Frame>, WireError> {
        let mut hdr = [0u8; HEADER_LEN];
        let got = read_full(r, &mut hdr).await?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Err(WireError::Truncated {
                got,
                want: HEADER_LEN,
            });
        }
        let header = Header::parse(&hdr)?;
        let mut payload = vec![0u8; header.len as usize];
        let got = read_full(r, &mut payload).await?;
        if got < payload.len() {
            return Err(WireError::Truncated {
                got: HEADER_LEN + got,
                want: HEADER_LEN + payload.len(),
            });
        }
        Ok(Some(Frame::from_parts(&header, Bytes::from(payload))?))
    }

    async fn read_full<R: AsyncRead + Unpin + ?Sized>(
        r: &mut R,
        buf: &mut [u8],
    ) -> std::io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match r.read(&mut buf[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }
}

#[cfg(feature = "tokio")]
pub use async_io::{read_frame_async, write_frame_async};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Hello, Request};

    #[test]
    fn blocking_round_trip_and_clean_eof() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Frame::Hello(Hello::new(None))).unwrap();
        write_frame(
            &mut buf,
            &Frame::Request {
                id: 1,
                request: Request::Shutdown,
            },
        )
        .unwrap();
        let mut r = &buf[..];
        assert!(matches!(read_frame(&mut r), Ok(Some(Frame::Hello(_)))));
        assert!(matches!(
            read_frame(&mut r),
            Ok(Some(Frame::Request { id: 1, .. }))
        ));
        assert!(matches!(read_frame(&mut r), Ok(None)));
    }

    #[test]
    fn truncation_is_reported() {
        let buf = Frame::Hello(Hello::new(None)).to_vec().unwrap();
        for cut in 1..buf.len() {
            let mut r = &buf[..cut];
            assert!(
                matches!(read_frame(&mut r), Err(WireError::Truncated { got, .. }) if got == cut),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_header_is_refused_without_reading_the_payload() {
        let mut buf = vec![0xff, 0xff, 0xff, 0xff, 4, 0, 0, 0, 1, 0, 0, 0];
        buf.extend_from_slice(b"tail");
        let mut r = &buf[..];
        assert!(matches!(
            read_frame(&mut r),
            Err(WireError::Decode(DecodeError::FrameTooLarge { .. }))
        ));
        assert_eq!(r, b"tail");
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn async_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let f = Frame::Data {
            stream: 9,
            data: Bytes::from(vec![7u8; 1000]),
        };
        let f2 = f.clone();
        let w = tokio::spawn(async move {
            write_frame_async(&mut a, &f2).await.unwrap();
        });
        assert_eq!(read_frame_async(&mut b).await.unwrap(), Some(f));
        w.await.unwrap();
        assert_eq!(read_frame_async(&mut b).await.unwrap(), None);
    }
}
