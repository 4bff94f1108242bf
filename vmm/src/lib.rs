//! cocoon-vmm: Cocoon's micro-VMM, one process per sandbox VM.
//!
//! Built on the rust-vmm crates: `kvm-ioctls` for KVM, `vm-memory` for guest
//! memory, `linux-loader` for the kernel and boot parameters, `vm-superio`
//! for the legacy UART and i8042. The VMM knows nothing about containers.

#![warn(missing_docs)]

pub mod arch;
pub mod config;
pub mod devices;
pub mod guest_panic;
pub mod loader;
pub mod memory;
pub mod seccomp;
pub mod vcpu;
pub mod vm;

pub use config::{VmConfig, VmConfigFile};
pub use vm::{run, GuestExit, RunOptions, RunReport, VmError};

/// Exit status of `cocoon-vmm` when the guest ended normally.
pub const EXIT_OK: i32 = 0;
/// Exit status for invalid input or a VMM/KVM failure.
pub const EXIT_ERROR: i32 = 1;
/// Exit status when the guest kernel panicked.
pub const EXIT_GUEST_PANIC: i32 = 3;
