//! virtio-vsock eventfd and socket wiring: queue notifications, the host
//! listener, and every bridged stream, each identified by the token in its
//! epoll data. Interest changes the device recorded are applied here.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use super::device::{Interest, FIRST_CONN_TOKEN, LISTENER_TOKEN};
use super::Vsock;

const RX_EVT: u32 = 0;
const TX_EVT: u32 = 1;
const EVENT_EVT: u32 = 2;

impl Vsock {
    fn apply_interest(&mut self, ops: &mut EventOps) {
        for change in self.interest.drain(..) {
            // Errors mean the registration is already in the wanted state
            // (e.g. removing an fd that was never added); nothing to undo.
            let _ = match change {
                Interest::Add(fd, token, set) => ops.add(Events::with_data_raw(fd, token, set)),
                Interest::Modify(fd, token, set) => {
                    ops.modify(Events::with_data_raw(fd, token, set))
                }
                Interest::Remove(fd, token) => {
                    ops.remove(Events::with_data_raw(fd, token, EventSet::empty()))
                }
            };
        }
        self.graveyard.clear();
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            RX_EVT | TX_EVT | EVENT_EVT => {
                let i = events.data() as usize;
                if let Some(evt) = self.queue_evts.get(i) {
                    let _ = evt.read();
                }
                match events.data() {
                    RX_EVT => self.process_rx(),
                    TX_EVT => self.process_tx(),
                    _ => {}
                }
            }
            LISTENER_TOKEN => self.accept(),
            t if t >= FIRST_CONN_TOKEN => self.host_event(t, events.event_set()),
            _ => {}
        }
        self.apply_interest(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            let _ = ops.add(Events::with_data(evt, i as u32, EventSet::IN));
        }
        let _ = ops.add(Events::with_data_raw(
            self.listener.as_raw_fd(),
            LISTENER_TOKEN,
            EventSet::IN,
        ));
    }
}
