//! virtio-rng device state and request handling. A request is a chain of
//! device-writable buffers; read-only descriptors are skipped, buffers
//! outside guest memory end the request, and at most `MAX_REQUEST` bytes
//! are served per chain.

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{MAX_REQUEST, QUEUE_SIZE};
use crate::devices::virtio::{expect_queues, serve_queue, ActivateError, Interrupt, VirtioDevice};

const VIRTIO_ID_RNG: u32 = 4;

pub(super) struct Active {
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queue: Queue,
}

/// A virtio-rng device.
pub struct Rng {
    pub(super) queue_evts: Vec<EventFd>,
    active: Option<Active>,
    buf: Vec<u8>,
    /// Bytes handed to the guest.
    pub bytes_served: u64,
}

/// Fills `buf` from getrandom(2).
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live mutable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl Rng {
    /// Creates the device.
    pub fn new() -> std::io::Result<Self> {
        Ok(Rng {
            queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?],
            active: None,
            buf: vec![0u8; MAX_REQUEST as usize],
            bytes_served: 0,
        })
    }

    /// Serves every available request; interrupts the guest once.
    pub(super) fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (buf, served) = (&mut self.buf, &mut self.bytes_served);
        serve_queue(&mut active.queue, mem, &active.interrupt, |chain| {
            let mut written: u32 = 0;
            for desc in chain {
                if !desc.is_write_only() {
                    continue;
                }
                let n = desc.len().min(MAX_REQUEST - written) as usize;
                if n == 0 {
                    break;
                }
                if fill_random(&mut buf[..n]).is_err()
                    || mem.write_slice(&buf[..n], desc.addr()).is_err()
                {
                    break;
                }
                written += n as u32;
            }
            *served += u64::from(written);
            written
        });
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        _acked: u64,
    ) -> Result<(), ActivateError> {
        let queue = expect_queues(queues, 1)?.remove(0);
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        self.process_queue();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::{linked, mem, W};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    fn run(descs: &[(u64, u32, u16)]) -> (Rng, GuestMemoryMmap, u32) {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&linked(descs), 0).unwrap();
        let mut rng = Rng::new().unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        rng.activate(
            m.clone(),
            Interrupt::new(irq),
            vec![q.create_queue().unwrap()],
            0,
        )
        .unwrap();
        let used_len = q.used().ring().ref_at(0).unwrap().load().len();
        (rng, m, used_len)
    }

    #[test]
    fn fills_writable_buffers() {
        let (rng, m, used) = run(&[(0x10_0000, 4096, W)]);
        assert_eq!(used, 4096);
        assert_eq!(rng.bytes_served, 4096);
        let mut b = vec![0u8; 4096];
        m.read_slice(&mut b, GuestAddress(0x10_0000)).unwrap();
        assert!(b.iter().any(|&x| x != 0));
    }

    #[test]
    fn huge_length_is_capped() {
        // Only the first MAX_REQUEST bytes are written, and only if they lie
        // in guest memory.
        let (_, _, used) = run(&[(0x10_0000, u32::MAX, W)]);
        assert_eq!(used, MAX_REQUEST);
        let (_, _, used) = run(&[(0xff_f000, u32::MAX, W)]);
        assert_eq!(used, 0);
        let (_, _, used) = run(&[(0x10_0000, 0x80_0000, W)]);
        assert_eq!(used, MAX_REQUEST);
    }

    #[test]
    fn read_only_and_out_of_range_descriptors_are_skipped() {
        let (_, _, used) = run(&[(0x10_0000, 64, 0), (0x20_0000, 64, W)]);
        assert_eq!(used, 64);
        let (_, _, used) = run(&[(0x1_0000_0000, 64, W)]);
        assert_eq!(used, 0);
    }
}
