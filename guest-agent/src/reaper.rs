//! PID 1's reaper: collects every child's exit status and hands the ones
//! the agent started to whoever waits for them. Children that exit before
//! they are registered (a fast `true`) are kept until registration, so no
//! status is lost; orphans re-parented to PID 1 are reaped and dropped.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// A raw wait status, as `waitpid` reports it.
pub type RawStatus = libc::c_int;

/// Where one child's exit status lands.
#[derive(Default)]
pub struct ExitSlot {
    status: Mutex<Option<RawStatus>>,
    cv: Condvar,
}

impl ExitSlot {
    /// Blocks until the child has exited.
    pub fn wait(&self) -> RawStatus {
        let mut g = lock(&self.status);
        loop {
            if let Some(s) = *g {
                return s;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The status if the child has exited.
    pub fn try_get(&self) -> Option<RawStatus> {
        *lock(&self.status)
    }

    fn set(&self, s: RawStatus) {
        *lock(&self.status) = Some(s);
        self.cv.notify_all();
    }
}

#[derive(Default)]
struct State {
    waiting: HashMap<libc::pid_t, Arc<ExitSlot>>,
    unclaimed: HashMap<libc::pid_t, RawStatus>,
}

/// The process-wide table of children being watched.
#[derive(Default)]
pub struct Reaper {
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's single reaper.
pub fn reaper() -> &'static Reaper {
    static R: OnceLock<Reaper> = OnceLock::new();
    R.get_or_init(Reaper::default)
}

/// Held across fork so the child's status cannot be delivered before its
/// slot exists.
pub struct Registration<'a>(MutexGuard<'a, State>);

impl Registration<'_> {
    /// Watches `pid`; its status goes to the returned slot.
    pub fn watch(mut self, pid: libc::pid_t) -> Arc<ExitSlot> {
        let slot = Arc::new(ExitSlot::default());
        if let Some(s) = self.0.unclaimed.remove(&pid) {
            slot.set(s);
        } else {
            self.0.waiting.insert(pid, slot.clone());
        }
        slot
    }
}

impl Reaper {
    /// Locks the table; call `watch` with the new child's pid.
    pub fn register(&self) -> Registration<'_> {
        Registration(lock(&self.state))
    }

    fn deliver(&self, pid: libc::pid_t, status: RawStatus, known_only: bool) {
        let mut st = lock(&self.state);
        if let Some(slot) = st.waiting.remove(&pid) {
            slot.set(status);
        } else if !known_only {
            st.unclaimed.insert(pid, status);
            // Orphans are never claimed; keep the table bounded.
            if st.unclaimed.len() > 4096 {
                st.unclaimed.clear();
            }
        }
    }

    /// Reaps forever on the calling thread, which must be the only one
    /// with SIGCHLD unblocked-or-waited (all threads block it).
    pub fn run(&self) -> ! {
        crate::sys::block_sigchld();
        // SAFETY: a local signal set containing SIGCHLD.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            set
        };
        loop {
            loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid status pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
                if pid <= 0 {
                    break;
                }
                // A child whose registration is pending is in `unclaimed`
                // until `watch` moves it: registration holds the lock
                // across fork, so it cannot be missed.
                self.deliver(pid, status, false);
            }
            // SAFETY: the set is valid; a null info pointer is allowed.
            unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        }
    }
}

/// Exit code or signal of a raw status, as the protocol reports it.
pub fn decode(status: RawStatus) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_that_arrives_before_registration_is_kept() {
        let r = Reaper::default();
        r.deliver(42, 3 << 8, false);
        let slot = r.register().watch(42);
        assert_eq!(decode(slot.try_get().unwrap()), (Some(3), None));
    }

    #[test]
    fn a_registered_child_gets_its_status() {
        let r = Reaper::default();
        let slot = r.register().watch(7);
        assert!(slot.try_get().is_none());
        r.deliver(7, 9, false);
        assert_eq!(decode(slot.wait()), (None, Some(9)));
    }
}
