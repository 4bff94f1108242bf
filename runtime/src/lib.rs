//! Cocoon's runtime: everything between the API (`cocoond`, the containerd
//! shim) and one `cocoon-vmm` process per sandbox.
//!
//! Today it holds the image layer: [`image::Images`] imports OCI and Docker
//! images, unpacks them and builds the read-only root disk each sandbox
//! boots from. Sandbox lifecycle, networking and the VMM jail come later and
//! will sit beside it; nothing here talks to a VMM or a guest.
#![warn(missing_docs)]

pub mod image;
