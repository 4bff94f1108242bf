//! Per-stream flow control: window accounting for both ends of a stream.
//!
//! Every stream starts with [`INITIAL_WINDOW`] bytes granted to its sender
//! without any frame. The sender ([`SendWindow`]) never has more bytes in
//! flight than it was granted; the receiver ([`RecvWindow`]) checks that the
//! peer keeps to that and returns credit (`Credit` frames) as its consumer
//! drains the data, batched so that a credit frame is sent per
//! [`CREDIT_BATCH`] bytes rather than per `Data` frame. A receiver therefore
//! never buffers more than the window per stream, whatever the peer does:
//! bytes beyond it are a protocol violation ([`FlowError::WindowExceeded`]).
//!
//! These types are plain counters: no I/O, no clocks, no locking.

use thiserror::Error;

use crate::frame::MAX_FRAME_PAYLOAD;

/// Bytes a stream's sender may send before the first `Credit` (256 KiB).
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// A [`RecvWindow`] returns credit once this many consumed bytes have not
/// been credited yet (a quarter of the window). Must not exceed the window,
/// or a sender that used its whole window would never get credit back.
pub const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

/// A flow-control rule was broken by the peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlowError {
    /// The peer sent more bytes than it was granted.
    #[error("peer sent {len} bytes on a stream with {available} bytes of credit")]
    WindowExceeded {
        /// Bytes in the offending `Data` frame.
        len: usize,
        /// Credit the peer had left.
        available: u32,
    },
    /// A `Credit` frame would overflow the sender's window counter.
    #[error("credit of {credit} bytes overflows a window of {available} bytes")]
    CreditOverflow {
        /// Bytes granted by the frame.
        credit: u32,
        /// Credit already available.
        available: u32,
    },
}

/// The sending side of a stream: how many bytes may still be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    available: u32,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SendWindow {
    /// A window holding the implicit [`INITIAL_WINDOW`].
    pub fn new() -> Self {
        SendWindow {
            available: INITIAL_WINDOW,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u32 {
        self.available
    }

    /// Takes up to `want` bytes from the window (never more than
    /// [`MAX_FRAME_PAYLOAD`], so the result fits one `Data` frame) and
    /// returns how many were taken; 0 means: wait for credit.
    pub fn take(&mut self, want: usize) -> usize {
        let n = want.min(self.available as usize).min(MAX_FRAME_PAYLOAD);
        // n <= available, a u32, so this neither truncates nor underflows.
        self.available -= n as u32;
        n
    }

    /// Adds credit received from the peer.
    pub fn grant(&mut self, credit: u32) -> Result<(), FlowError> {
        self.available = self
            .available
            .checked_add(credit)
            .ok_or(FlowError::CreditOverflow {
                credit,
                available: self.available,
            })?;
        Ok(())
    }
}

/// The receiving side of a stream: checks the peer's sends against the
/// window and decides when to return credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWindow {
    /// Bytes the peer may still send.
    window: u32,
    /// Received but not yet consumed.
    buffered: u32,
    /// Consumed but not yet credited back.
    uncredited: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvWindow {
    /// A window matching the peer's implicit [`INITIAL_WINDOW`].
    pub fn new() -> Self {
        RecvWindow {
            window: INITIAL_WINDOW,
            buffered: 0,
            uncredited: 0,
        }
    }

    /// Bytes the peer may still send before it needs credit.
    pub fn remaining(&self) -> u32 {
        self.window
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> u32 {
        self.buffered
    }

    /// Accounts for a `Data` frame of `len` bytes from the peer. An error
    /// means the peer broke the protocol; the bytes must be dropped.
    pub fn on_data(&mut self, len: usize) -> Result<(), FlowError> {
        let n = u32::try_from(len)
            .ok()
            .filter(|&n| n <= self.window)
            .ok_or(FlowError::WindowExceeded {
                len,
                available: self.window,
            })?;
        self.window -= n;
        self.buffered += n;
        Ok(())
    }

    /// Accounts for `len` bytes handed to the consumer. Returns the credit
    /// to send now, if any. Consuming more than was received is clamped
    /// (it would be a bug in the caller, not something the peer can cause).
    pub fn on_consumed(&mut self, len: usize) -> Option<u32> {
        let n = u32::try_from(len).unwrap_or(u32::MAX).min(self.buffered);
        self.buffered -= n;
        self.uncredited += n;
        if self.uncredited >= CREDIT_BATCH {
            Some(self.flush_credit())
        } else {
            None
        }
    }

    /// Returns all consumed-but-uncredited bytes as credit now (0 if none),
    /// e.g. when discarding a stream's data so the peer is never stalled.
    pub fn flush_credit(&mut self) -> u32 {
        let c = self.uncredited;
        self.uncredited = 0;
        // window + buffered + uncredited never exceeds INITIAL_WINDOW.
        self.window += c;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_stops_at_the_window_and_resumes_on_credit() {
        let mut w = SendWindow::new();
        assert_eq!(w.take(100), 100);
        assert_eq!(w.take(usize::MAX), INITIAL_WINDOW as usize - 100);
        assert_eq!(w.take(1), 0);
        w.grant(10).unwrap();
        assert_eq!(w.available(), 10);
        assert_eq!(w.take(50), 10);
    }

    #[test]
    fn sender_chunks_fit_one_frame() {
        let mut w = SendWindow::new();
        w.grant(u32::MAX - INITIAL_WINDOW).unwrap();
        assert_eq!(w.take(usize::MAX), MAX_FRAME_PAYLOAD);
    }

    #[test]
    fn credit_overflow_is_an_error() {
        let mut w = SendWindow::new();
        assert_eq!(
            w.grant(u32::MAX),
            Err(FlowError::CreditOverflow {
                credit: u32::MAX,
                available: INITIAL_WINDOW
            })
        );
        assert_eq!(w.available(), INITIAL_WINDOW);
    }

    #[test]
    fn receiver_refuses_bytes_beyond_the_window() {
        let mut r = RecvWindow::new();
        r.on_data(INITIAL_WINDOW as usize).unwrap();
        assert_eq!(
            r.on_data(1),
            Err(FlowError::WindowExceeded {
                len: 1,
                available: 0
            })
        );
        assert!(r.on_data(usize::MAX).is_err());
    }

    #[test]
    fn receiver_batches_credit() {
        let mut r = RecvWindow::new();
        r.on_data(1000).unwrap();
        assert_eq!(r.on_consumed(1000), None);
        r.on_data(CREDIT_BATCH as usize).unwrap();
        assert_eq!(
            r.on_consumed(CREDIT_BATCH as usize),
            Some(CREDIT_BATCH + 1000)
        );
        assert_eq!(r.remaining(), INITIAL_WINDOW);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn over_consumption_is_clamped() {
        let mut r = RecvWindow::new();
        r.on_data(10).unwrap();
        assert_eq!(r.on_consumed(usize::MAX), None);
        assert_eq!(r.flush_credit(), 10);
        assert_eq!(r.remaining(), INITIAL_WINDOW);
    }

    /// Sender and receiver driven together never exceed the window and
    /// never stall while the consumer keeps draining.
    #[test]
    fn sender_and_receiver_agree() {
        let mut s = SendWindow::new();
        let mut r = RecvWindow::new();
        let mut sent = 0usize;
        let total = 10 * INITIAL_WINDOW as usize + 12345;
        let mut step = 0u32;
        let mut drain_in = 3;
        while sent < total {
            let n = s.take((total - sent).min(7000 + (step as usize % 5) * 9000));
            if n == 0 {
                // Blocked: the consumer must drain everything buffered, and
                // that must produce credit.
                let buffered = r.buffered() as usize;
                let c = r.on_consumed(buffered).expect("credit when blocked");
                s.grant(c).unwrap();
                continue;
            }
            r.on_data(n).unwrap();
            sent += n;
            step += 1;
            drain_in -= 1;
            if drain_in == 0 {
                drain_in = 3;
                let half = r.buffered() as usize / 2;
                if let Some(c) = r.on_consumed(half) {
                    s.grant(c).unwrap();
                }
            }
            let in_flight = INITIAL_WINDOW - s.available();
            assert!(in_flight <= INITIAL_WINDOW);
            assert!(r.buffered() <= INITIAL_WINDOW);
        }
    }
}
