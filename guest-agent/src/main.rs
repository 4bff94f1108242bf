//! cocoon-agent: PID 1 inside every Cocoon VM. Sets up the guest's base
//! filesystems, tells the VMM it is up through the debug port, and then
//! serves (reaping orphans) until the protocol issue gives it work. The
//! kernel command line selects a mode: `cocoon.mode=summary` prints one line
//! about the guest and powers off; `cocoon.mode=reboot` resets through the
//! kernel; `cocoon.mode=panic` exits PID 1 (the kernel panics), for tests.

// No Rust runtime start-up: std's `main` shim reopens closed stdio
// descriptors on /dev/null and aborts when it cannot, and PID 1 starts with
// no /dev/null and, without a console, no stdio at all.
#![cfg_attr(not(test), no_main)]

mod debug_port;
mod init;
mod summary;

use std::io::Write;

/// What the kernel command line asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Summary,
    Reboot,
    Panic,
}

fn mode_from_cmdline(cmdline: &str) -> Mode {
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("cocoon.mode=") {
            return match v {
                "summary" => Mode::Summary,
                "reboot" => Mode::Reboot,
                "panic" => Mode::Panic,
                _ => Mode::Serve,
            };
        }
    }
    Mode::Serve
}

fn log(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "cocoon-agent: {msg}");
    let _ = out.flush();
}

/// The C entry point; see the note on `no_main` above.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    agent_main();
    0
}

#[cfg_attr(test, allow(dead_code))]
fn agent_main() {
    if std::process::id() != 1 {
        eprintln!("cocoon-agent: must run as PID 1 inside a Cocoon VM");
        std::process::exit(1);
    }
    let _ = debug_port::signal(debug_port::INIT_STARTED);
    init::setup();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mode = mode_from_cmdline(&cmdline);
    if let Err(e) = debug_port::signal(debug_port::BOOT_COMPLETE) {
        log(&format!("cannot signal boot-complete: {e}"));
    }
    match mode {
        Mode::Summary => {
            log(&summary::collect().to_string());
            init::power_off();
        }
        Mode::Reboot => init::reboot(),
        Mode::Panic => {
            log("exiting PID 1 as asked (cocoon.mode=panic)");
            std::process::exit(1);
        }
        Mode::Serve => init::reap_forever(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_is_read_from_the_command_line() {
        assert_eq!(
            mode_from_cmdline("quiet cocoon.mode=summary"),
            Mode::Summary
        );
        assert_eq!(mode_from_cmdline("cocoon.mode=panic\n"), Mode::Panic);
        assert_eq!(mode_from_cmdline("cocoon.mode=bogus"), Mode::Serve);
        assert_eq!(mode_from_cmdline(""), Mode::Serve);
    }
}
