//! Whether this host can give sandboxes' NICs the kernel's vhost-net data
//! path (`/dev/vhost-net`): the daemon decides once at start
//! (`cocoond --net-vhost auto|on|off`) and passes `vhost=on` to each
//! networked sandbox's VMM.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};

/// The vhost-net device.
pub const VHOST_NET: &str = "/dev/vhost-net";

/// Checks that `/dev/vhost-net` can be opened for reading and writing,
/// loading the `vhost_net` module first if the device is missing. The
/// error says why not.
pub fn available() -> Result<(), String> {
    if !Path::new(VHOST_NET).exists() {
        // Best effort: a kernel with vhost-net built in, or no modprobe,
        // is judged by the open below.
        let _ = Command::new("modprobe")
            .args(["-q", "vhost_net"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(VHOST_NET)
        .map(drop)
        .map_err(|e| format!("cannot open {VHOST_NET}: {e}"))
}
