//! cocoon-agent: PID 1 inside every Cocoon VM. Sets up the guest's base
//! filesystems, tells the VMM it is up through the debug port, and then
//! serves the host protocol (`proto/`) on vsock port 1024. The
//! kernel command line selects a mode: `cocoon.mode=summary` prints one line
//! about the guest and powers off; `cocoon.mode=reboot` resets through the
//! kernel; `cocoon.mode=panic` exits PID 1 (the kernel panics), for tests.

// No Rust runtime start-up: std's `main` shim reopens closed stdio
// descriptors on /dev/null and aborts when it cannot, and PID 1 starts with
// no /dev/null and, without a console, no stdio at all.
#![cfg_attr(not(test), no_main)]

mod conn;
mod container;
mod debug_port;
mod files;
mod init;
mod net;
mod reaper;
mod relay;
mod server;
mod spawn;
mod summary;
mod sys;

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

pub(crate) fn log(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "cocoon-agent: {msg}");
    let _ = out.flush();
}

/// The C entry point; see the note on `no_main` above.
#[cfg(not(test))]
#[no_mangle]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<String> = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes argc valid NUL-terminated strings.
            unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // The agent re-executes itself as each container's init.
    match args.get(1).map(String::as_str) {
        Some("container-init") => container::init_main(&args[2..]),
        Some("tar-in" | "tar-out") => files::tar_main(&args[1..]),
        _ => {}
    }
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
        Mode::Serve => serve(),
    }
}

/// Serves the host protocol; the main thread becomes the reaper.
fn serve() -> ! {
    // Before any thread exists, so every thread inherits it: SIGCHLD is
    // taken only by the reaper's sigwaitinfo.
    sys::block_sigchld();
    // SAFETY: ignoring SIGPIPE: a closed pipe or socket is an EPIPE error.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if let Err(e) = init::leave_initramfs() {
        log(&format!(
            "cannot leave the initramfs, containers will not start: {e}"
        ));
    }
    // Before the first answer to the host: once it reaches the agent, the
    // guest's network is ready.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match net::from_cmdline(&cmdline) {
        Ok(cfg) => {
            if let Err(e) = net::setup(cfg.as_ref()) {
                log(&format!("network set-up failed: {e}"));
            }
        }
        Err(e) => log(&format!("network set-up skipped: {e}")),
    }
    // The workload must never be able to get the agent OOM-killed.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    server::start();
    reaper::reaper().run()
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
