//! virtio-rng eventfd wiring.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Rng;

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(evt) = self.queue_evts.first() {
            if events.fd() == evt.as_raw_fd() {
                let _ = evt.read();
                self.process_queue();
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Some(evt) = self.queue_evts.first() {
            let _ = ops.add(Events::new(evt, EventSet::IN));
        }
    }
}
