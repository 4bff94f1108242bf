//! Cocoon's runtime: everything between the API (`cocoond`, the containerd
//! shim) and one `cocoon-vmm` process per sandbox.
//!
//! Today it holds the image layer: [`image::Images`] imports OCI and Docker
//! images, unpacks them and builds the read-only root disk each sandbox
//! boots from; and [`agent::AgentClient`], the async client for the guest
//! agent's protocol. Sandbox lifecycle, networking and the VMM jail come
//! later and will sit beside them.
#![warn(missing_docs)]

pub mod agent;
pub mod image;
