//! Integration tests that boot Cocoon's real guest kernel (and Debian's
//! stock kernel) to the agent under KVM. Run with `make vm-test`.

mod boot;
mod lifecycle;
