//! Pieces of the `cocoon` command-line client that do more than one
//! request: copying files (`cp`) and pulling images with progress (`pull`).

pub mod cp;
pub mod pull;
