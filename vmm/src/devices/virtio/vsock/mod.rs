//! virtio-vsock, a userspace device bridged to host Unix sockets in the
//! hybrid style Firecracker documents:
//! - host-initiated: connect to the device's socket `PATH`, write
//!   `CONNECT <port>\n`; once the guest accepts, read `OK <host-port>\n`,
//!   then the stream is the connection;
//! - guest-initiated: a guest connecting to CID 2 port P is bridged to the
//!   Unix socket `PATH_P`.
//!
//! Flow control is virtio-vsock's credit scheme: the device never reads
//! more from a host socket than the guest has room for, and advertises a
//! per-connection buffer it never exceeds, so neither side's memory grows
//! with a fast writer and a slow reader, and one stuck connection does not
//! stop the others.

pub mod connection;
pub mod device;
pub mod event_handler;
pub mod packet;

pub use device::Vsock;

/// The guest's context id.
pub const GUEST_CID: u64 = 3;
/// The host's context id.
pub const HOST_CID: u64 = 2;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest payload accepted in one packet (as Linux's virtio transport sends).
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// Per-connection receive buffer advertised to the guest.
pub const CONN_BUF: u32 = 256 << 10;
/// Connections at once; further requests are refused.
pub const MAX_CONNECTIONS: usize = 1024;
