//! virtio-rng (entropy device): fills guest buffers from the host's
//! getrandom(2). The guest kernel feeds it into its pool at boot, so
//! getrandom() in the guest never stalls.

pub mod device;
pub mod event_handler;

pub use device::Rng;

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes served per request at most: bounds the work a guest can ask for
/// with one descriptor of a huge length.
pub const MAX_REQUEST: u32 = 64 << 10;
