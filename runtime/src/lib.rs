//! Cocoon's runtime: everything between the API and one `cocoon-vmm` process.
#![warn(missing_docs)]
