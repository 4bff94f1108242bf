//! virtio-blk: a raw image file as a disk. Read-only or read-write, flush,
//! GET_ID, capacity from the file size; sparse files stay sparse because
//! nothing is ever written that the guest did not write.

pub mod device;
pub mod event_handler;
pub mod io;
pub mod request;

pub use device::{Block, BlockConfig, BlockError};

/// Bytes per sector, as virtio-blk counts.
pub const SECTOR_SIZE: u64 = 512;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request we accept (advertised as seg_max): as many as
/// a chain of header, segments and status can have in the ring (no
/// indirect descriptors), so the guest sends a 1 MiB request of 4 KiB
/// pages as one request rather than two.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of a drive id (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
