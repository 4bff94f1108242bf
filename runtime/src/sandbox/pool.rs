//! The warm pool (`cocoond --warm-pool N`): up to N VMs booted ahead of
//! demand, in the shape of the last sandbox created (image, vCPUs, memory,
//! scratch disk size; `network: none` only), so that a create of that shape
//! skips the boot and only creates its container. This module is the
//! bookkeeping; booting, adopting and discarding VMs is the manager's.
//!
//! One shape at a time keeps the cost bounded: a create of another shape
//! makes the pool give back the VMs it holds (the caller discards them) and
//! fill up for the new shape. One filler runs at a time and boots one VM
//! after another, always for the shape wanted now.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// The shape a warm VM was booted for; a create of the same shape can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmKey {
    /// The image's read-only root disk.
    pub root_disk: PathBuf,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Scratch disk, MiB.
    pub disk_mib: u64,
}

/// What the pool holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// VMs booted and waiting.
    pub ready: usize,
    /// Creates that took a warm VM.
    pub hits: u64,
    /// Creates of a poolable shape that found none and booted their own.
    pub misses: u64,
}

/// Up to `size` ready VMs (`T`) of one shape.
#[derive(Debug)]
pub struct Pool<T> {
    size: usize,
    st: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    key: Option<WarmKey>,
    ready: VecDeque<T>,
    filling: bool,
    closed: bool,
    stats: PoolStats,
}

impl<T> Pool<T> {
    /// A pool keeping up to `size` VMs (0: off).
    pub fn new(size: usize) -> Self {
        Pool {
            size,
            st: Mutex::new(State {
                key: None,
                ready: VecDeque::new(),
                filling: false,
                closed: false,
                stats: PoolStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the pool keeps any VMs.
    pub fn enabled(&self) -> bool {
        self.size > 0
    }

    /// The oldest ready VM of shape `key` (the caller checks it is still
    /// alive and discards it if not).
    pub fn take(&self, key: &WarmKey) -> Option<T> {
        let mut st = self.lock();
        if st.key.as_ref() != Some(key) {
            return None;
        }
        st.ready.pop_front()
    }

    /// Counts a create that used a warm VM (`true`) or booted its own.
    pub fn count(&self, hit: bool) {
        let mut st = self.lock();
        if hit {
            st.stats.hits += 1;
        } else {
            st.stats.misses += 1;
        }
    }

    /// Sandboxes of shape `key` are wanted from now on. Returns the ready
    /// VMs of another shape (to discard) and whether the caller must start
    /// a filler (none is running and the pool is not full).
    pub fn want(&self, key: &WarmKey) -> (Vec<T>, bool) {
        let mut st = self.lock();
        if self.size == 0 || st.closed {
            return (Vec::new(), false);
        }
        let mut stale = Vec::new();
        if st.key.as_ref() != Some(key) {
            st.key = Some(key.clone());
            stale = st.ready.drain(..).collect();
        }
        let start = !st.filling && st.ready.len() < self.size;
        if start {
            st.filling = true;
        }
        (stale, start)
    }

    /// For the filler: the shape to boot next, or `None` once the pool is
    /// full or closed (the filler then ends; a later [`want`](Self::want)
    /// starts another).
    pub fn next_fill(&self) -> Option<WarmKey> {
        let mut st = self.lock();
        match &st.key {
            Some(k) if !st.closed && st.ready.len() < self.size => Some(k.clone()),
            _ => {
                st.filling = false;
                None
            }
        }
    }

    /// A VM the filler booted for `key`: kept while that shape is wanted
    /// and there is room, otherwise handed back to be discarded.
    pub fn put(&self, key: &WarmKey, vm: T) -> Option<T> {
        let mut st = self.lock();
        if st.closed || st.key.as_ref() != Some(key) || st.ready.len() >= self.size {
            return Some(vm);
        }
        st.ready.push_back(vm);
        None
    }

    /// Forgets the wanted shape when `stale` says it is no longer usable
    /// (its image was removed): hands back its ready VMs, and the filler
    /// stops until a create wants a shape again.
    pub fn forget(&self, stale: impl Fn(&WarmKey) -> bool) -> Vec<T> {
        let mut st = self.lock();
        if !st.key.as_ref().is_some_and(stale) {
            return Vec::new();
        }
        st.key = None;
        st.ready.drain(..).collect()
    }

    /// The filler could not boot a VM: it stops (the next create tries
    /// again).
    pub fn fill_failed(&self) {
        self.lock().filling = false;
    }

    /// Closes the pool (the daemon stops): every ready VM is handed back and
    /// nothing is kept from now on.
    pub fn close(&self) -> Vec<T> {
        let mut st = self.lock();
        st.closed = true;
        st.key = None;
        st.ready.drain(..).collect()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Counts, for metrics.
    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            ready: st.ready.len(),
            ..st.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mib: u64) -> WarmKey {
        WarmKey {
            root_disk: "/img.erofs".into(),
            vcpus: 1,
            memory_mib: mib,
            disk_mib: 1024,
        }
    }

    #[test]
    fn off_pool_never_fills() {
        let p: Pool<u32> = Pool::new(0);
        assert!(!p.enabled());
        assert_eq!(p.want(&key(256)), (vec![], false));
        assert_eq!(p.next_fill(), None);
        assert_eq!(p.take(&key(256)), None);
    }

    #[test]
    fn fills_to_size_for_the_wanted_shape_and_hands_out_in_order() {
        let p = Pool::new(2);
        assert_eq!(p.want(&key(256)), (vec![], true));
        // A second create while the filler runs starts no other filler.
        assert_eq!(p.want(&key(256)), (vec![], false));
        assert_eq!(p.next_fill(), Some(key(256)));
        assert_eq!(p.put(&key(256), 1), None);
        assert_eq!(p.next_fill(), Some(key(256)));
        assert_eq!(p.put(&key(256), 2), None);
        assert_eq!(p.next_fill(), None, "full: the filler ends");
        assert_eq!(p.stats().ready, 2);
        assert_eq!(p.take(&key(512)), None, "another shape");
        assert_eq!(p.take(&key(256)), Some(1));
        p.count(true);
        assert_eq!(p.want(&key(256)), (vec![], true), "room again");
        assert_eq!(
            p.stats(),
            PoolStats {
                ready: 1,
                hits: 1,
                misses: 0
            }
        );
    }

    #[test]
    fn another_shape_gives_back_the_old_vms_and_the_filler_follows() {
        let p = Pool::new(2);
        p.want(&key(256));
        assert_eq!(p.next_fill(), Some(key(256)));
        assert_eq!(p.put(&key(256), 1), None);
        let (stale, start) = p.want(&key(512));
        assert_eq!(stale, vec![1]);
        assert!(!start, "the running filler switches shape");
        // A VM of the old shape that finishes booting now is not kept.
        assert_eq!(p.put(&key(256), 2), Some(2));
        assert_eq!(p.next_fill(), Some(key(512)));
    }

    #[test]
    fn forgetting_a_removed_image_hands_back_its_vms_and_stops_the_filler() {
        let p = Pool::new(2);
        p.want(&key(256));
        p.put(&key(256), 1);
        assert_eq!(
            p.forget(|k| k.memory_mib == 512),
            Vec::<i32>::new(),
            "not that shape"
        );
        assert_eq!(p.stats().ready, 1);
        assert_eq!(p.forget(|k| k.memory_mib == 256), vec![1]);
        assert_eq!(
            p.put(&key(256), 2),
            Some(2),
            "a VM booting for it is not kept"
        );
        assert_eq!(p.next_fill(), None);
        assert_eq!(p.want(&key(256)), (vec![], true), "wanted again later");
    }

    #[test]
    fn a_failed_fill_lets_the_next_create_start_another() {
        let p: Pool<u32> = Pool::new(1);
        assert!(p.want(&key(256)).1);
        p.fill_failed();
        assert!(p.want(&key(256)).1);
    }

    #[test]
    fn closing_hands_back_everything_and_keeps_nothing_after() {
        let p = Pool::new(2);
        p.want(&key(256));
        p.put(&key(256), 1);
        assert_eq!(p.close(), vec![1]);
        assert!(p.is_closed());
        assert_eq!(p.put(&key(256), 2), Some(2));
        assert_eq!(p.want(&key(256)), (vec![], false));
        assert_eq!(p.next_fill(), None);
    }
}
