//! virtio-blk eventfd wiring: the queue's ioeventfd drives request
//! processing. Notifications before activation are drained and ignored.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Block;

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(evt) = self.queue_evts.first() {
            if events.fd() == std::os::fd::AsRawFd::as_raw_fd(evt) {
                let _ = evt.read();
                self.process_queue();
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Some(evt) = self.queue_evts.first() {
            // Registration fails only if the fd is already registered.
            let _ = ops.add(Events::new(evt, EventSet::IN));
        }
    }
}
