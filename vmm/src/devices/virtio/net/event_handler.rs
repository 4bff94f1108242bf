//! virtio-net eventfd and TAP wiring: the RX and TX queue notifications,
//! and the TAP while the device wants it (active, guest has room, TAP
//! healthy). After every event the TAP's registration is brought in line
//! with what the device wants; activation and reset signal the RX eventfd
//! so that happens promptly. With vhost-net nothing is registered: the
//! kernel takes the notifications and reads the TAP.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::Net;

const RX_EVT: u32 = 0;
const TX_EVT: u32 = 1;
const TAP: u32 = 2;

impl Net {
    fn sync_tap_interest(&mut self, ops: &mut EventOps) {
        let want = self.wants_tap();
        if want == self.tap_registered {
            return;
        }
        let ev = Events::with_data(&self.tap, TAP, EventSet::IN);
        let done = if want { ops.add(ev) } else { ops.remove(ev) };
        // A failure means epoll already had it the other way round.
        let _ = done;
        self.tap_registered = want;
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            RX_EVT => {
                let _ = self.queue_evts[0].read();
                self.rx_notified();
            }
            TX_EVT => {
                let _ = self.queue_evts[1].read();
                self.process_tx();
            }
            TAP if events.fd() == self.tap.as_raw_fd() => self.process_rx(),
            _ => {}
        }
        self.sync_tap_interest(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if self.use_vhost {
            // The kernel takes the notifications and reads the TAP.
            return;
        }
        for (i, evt) in self.queue_evts.iter().enumerate() {
            // Registration fails only if the fd is already registered.
            let _ = ops.add(Events::with_data(evt, i as u32, EventSet::IN));
        }
    }
}
