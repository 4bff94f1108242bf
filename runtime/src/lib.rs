//! Cocoon's runtime: everything between the API (`cocoond`, the containerd
//! shim) and one `cocoon-vmm` process per sandbox.
//!
//! It holds the image layer: [`image::Images`] imports OCI and Docker
//! images, unpacks them and builds the read-only root disk each sandbox
//! boots from; [`agent::AgentClient`], the async client for the guest
//! agent's protocol; and [`sandbox::SandboxManager`], the sandbox lifecycle
//! on top of both; [`network::HostNetwork`], each sandbox's network
//! namespace, TAP and NAT (`network: default`). The VMM jail comes later
//! and will sit beside them.
#![warn(missing_docs)]

pub mod agent;
pub mod image;
pub mod network;
pub mod sandbox;
