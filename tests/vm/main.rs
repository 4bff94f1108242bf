//! Integration tests that boot Cocoon's real guest kernel (and Debian's
//! stock kernel) to the agent under KVM. Run with `make vm-test`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod agent;
mod api;
mod boot;
mod interactive;
mod lifecycle;
mod net;
mod network;
mod seccomp;
mod virtio;
mod vsock;
