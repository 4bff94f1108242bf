//! Cocoon's REST daemon (`cocoond`) and its command-line client (`cocoon`).
//!
//! - [`routes`]: the versioned JSON API as an axum [`Router`](axum::Router)
//!   over a [`Backend`](backend::Backend);
//! - [`backend`]: that trait and the real one on
//!   [`SandboxManager`](cocoon_runtime::sandbox::SandboxManager);
//! - [`server`]: serving on a Unix socket, or on TCP behind a bearer token;
//! - [`stream`]: the WebSocket protocol of streaming exec and attach, and
//!   the daemon's end of it;
//! - [`client`]: the HTTP/1 and WebSocket client over a Unix socket the CLI
//!   uses, and [`console`]: its end of a streaming session (local stdio,
//!   terminal, signals);
//! - [`openapi`]: the checked-in OpenAPI document;
//! - [`types`], [`error`]: bodies and errors shared by both sides.
//!
//! Nothing of the sandbox lifecycle lives here: it is in `cocoon-runtime`,
//! which the containerd shim uses too.
#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod client;
pub mod console;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod stream;
pub mod types;

#[cfg(test)]
mod tests;
