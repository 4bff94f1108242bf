//! virtio-blk device state: the disk, its config space, its queue.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::io::Disk;
use super::request::{self, S_IOERR};
use super::{ID_BYTES, QUEUE_SIZE, SEG_MAX};
use crate::devices::virtio::{
    expect_queues, read_config_bytes, serve_queue, ActivateError, Interrupt, VirtioDevice,
    VIRTIO_RING_F_EVENT_IDX,
};

const VIRTIO_ID_BLOCK: u32 = 2;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

/// How a drive is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Image file.
    pub path: PathBuf,
    /// Refuse writes.
    pub read_only: bool,
    /// Drive id returned by GET_ID (at most 20 bytes).
    pub id: String,
}

/// Errors creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image cannot be opened.
    #[error("cannot open disk {path}: {err}")]
    Open {
        /// Path.
        path: String,
        /// Cause.
        err: std::io::Error,
    },
    /// The image is smaller than a sector.
    #[error("disk {0} is smaller than one 512-byte sector")]
    TooSmall(String),
    /// eventfd creation failed.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
}

pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub interrupt: Interrupt,
    pub queue: Queue,
}

/// A virtio-blk device.
pub struct Block {
    pub(super) disk: Disk,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) active: Option<Active>,
    config_space: Vec<u8>,
    features: u64,
    /// Requests that failed to parse (counted for metrics).
    pub malformed_requests: u64,
}

impl Block {
    /// Opens the image described by `cfg`.
    pub fn new(cfg: &BlockConfig) -> Result<Self, BlockError> {
        let name = cfg.path.display().to_string();
        let file: File = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(|err| BlockError::Open {
                path: name.clone(),
                err,
            })?;
        let size = file
            .metadata()
            .map_err(|err| BlockError::Open {
                path: name.clone(),
                err,
            })?
            .len();
        if size < 512 {
            return Err(BlockError::TooSmall(name));
        }
        let disk = Disk::new(file, size, cfg.read_only, &cfg.id);
        let mut config_space = vec![0u8; 24];
        config_space[0..8].copy_from_slice(&disk.capacity().to_le_bytes());
        config_space[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        let mut features = F_SEG_MAX | F_FLUSH | VIRTIO_RING_F_EVENT_IDX;
        if cfg.read_only {
            features |= F_RO;
        }
        let evt =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(BlockError::EventFd)?;
        Ok(Block {
            disk,
            queue_evts: vec![evt],
            active: None,
            config_space,
            features,
            malformed_requests: 0,
        })
    }

    /// Processes every available request; interrupts the guest once.
    pub(super) fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (disk, malformed) = (&mut self.disk, &mut self.malformed_requests);
        serve_queue(
            &mut active.queue,
            mem,
            &active.interrupt,
            |chain| match request::parse(chain, disk.capacity()) {
                Ok(req) => {
                    let (status, written) = disk.execute(mem, &req);
                    if mem.write_obj(status, req.status).is_ok() {
                        written.saturating_add(1)
                    } else {
                        written
                    }
                }
                Err((_, status)) => {
                    *malformed += 1;
                    match status {
                        Some(addr) if mem.write_obj(S_IOERR, addr).is_ok() => 1,
                        _ => 0,
                    }
                }
            },
        );
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data)
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        acked: u64,
    ) -> Result<(), ActivateError> {
        let mut queue = expect_queues(queues, 1)?.remove(0);
        queue.set_event_idx(acked & VIRTIO_RING_F_EVENT_IDX != 0);
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        // Requests queued before activation are served now.
        self.process_queue();
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl Block {
    /// The drive id length limit, for config validation.
    pub const ID_MAX: usize = ID_BYTES;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::request::tests::{
        header, linked, mem, DATA, HDR, STATUS, W,
    };
    use crate::devices::virtio::block::request::S_OK;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    fn disk_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    fn active(
        block: &mut Block,
        m: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
    ) -> EventFd {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Interrupt::new(irq.try_clone().unwrap());
        block
            .activate(m.clone(), interrupt, vec![q.create_queue().unwrap()], 0)
            .unwrap();
        irq
    }

    #[test]
    fn read_returns_file_contents() {
        let f = disk_file(&[7u8; 4096]);
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: true,
            id: "d0".into(),
        })
        .unwrap();
        let m = mem();
        header(&m, 0, 1);
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&linked(&[(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, W)]), 0)
            .unwrap();
        let irq = active(&mut b, &m, &q);
        let mut buf = [0u8; 512];
        m.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        assert_eq!(buf, [7u8; 512]);
        assert_eq!(m.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0);
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn multi_segment_writes_and_reads_land_at_the_right_offsets() {
        let f = disk_file(&[0u8; 8192]);
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: false,
            id: String::new(),
        })
        .unwrap();
        let m = mem();
        // Write sectors 2..5 from three segments of 512, 1024 and 512 bytes.
        header(&m, 1, 2);
        let data: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
        m.write_slice(&data[..512], GuestAddress(DATA)).unwrap();
        m.write_slice(&data[512..1536], GuestAddress(DATA + 0x1000))
            .unwrap();
        m.write_slice(&data[1536..], GuestAddress(DATA + 0x3000))
            .unwrap();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(
            &linked(&[
                (HDR, 16, 0),
                (DATA, 512, 0),
                (DATA + 0x1000, 1024, 0),
                (DATA + 0x3000, 512, 0),
                (STATUS, 1, W),
            ]),
            0,
        )
        .unwrap();
        active(&mut b, &m, &q);
        assert_eq!(m.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
        let file = std::fs::read(f.path()).unwrap();
        assert_eq!(&file[1024..3072], &data[..]);
        assert!(file[..1024].iter().chain(&file[3072..]).all(|&b| b == 0));

        // Read the same sectors back into two segments.
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: true,
            id: String::new(),
        })
        .unwrap();
        let m = mem();
        header(&m, 0, 2);
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(
            &linked(&[
                (HDR, 16, 0),
                (DATA, 1536, W),
                (DATA + 0x8000, 512, W),
                (STATUS, 1, W),
            ]),
            0,
        )
        .unwrap();
        active(&mut b, &m, &q);
        assert_eq!(m.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_OK);
        let mut a = vec![0u8; 1536];
        let mut c = vec![0u8; 512];
        m.read_slice(&mut a, GuestAddress(DATA)).unwrap();
        m.read_slice(&mut c, GuestAddress(DATA + 0x8000)).unwrap();
        assert_eq!(a, &data[..1536]);
        assert_eq!(c, &data[1536..]);
    }

    #[test]
    fn write_to_read_only_disk_fails_and_leaves_file_alone() {
        let f = disk_file(&[0u8; 4096]);
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: true,
            id: String::new(),
        })
        .unwrap();
        let m = mem();
        header(&m, 1, 0);
        m.write_slice(&[9u8; 512], GuestAddress(DATA)).unwrap();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&linked(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, W)]), 0)
            .unwrap();
        active(&mut b, &m, &q);
        assert_eq!(m.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
        assert_eq!(std::fs::read(f.path()).unwrap(), vec![0u8; 4096]);
    }

    #[test]
    fn malformed_request_gets_ioerr_and_the_device_keeps_working() {
        let f = disk_file(&[3u8; 4096]);
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: false,
            id: String::new(),
        })
        .unwrap();
        let m = mem();
        header(&m, 0, 100); // past the end
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&linked(&[(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, W)]), 0)
            .unwrap();
        active(&mut b, &m, &q);
        assert_eq!(m.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), S_IOERR);
        assert_eq!(b.malformed_requests, 1);
    }

    #[test]
    fn get_id_returns_the_drive_id() {
        let f = disk_file(&[0u8; 512]);
        let mut b = Block::new(&BlockConfig {
            path: f.path().into(),
            read_only: true,
            id: "scratch-1".into(),
        })
        .unwrap();
        let m = mem();
        header(&m, 8, 0);
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&linked(&[(HDR, 16, 0), (DATA, 20, W), (STATUS, 1, W)]), 0)
            .unwrap();
        active(&mut b, &m, &q);
        let mut id = [0u8; 20];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..9], b"scratch-1");
    }

    #[test]
    fn tiny_image_is_refused() {
        let f = disk_file(&[0u8; 100]);
        assert!(matches!(
            Block::new(&BlockConfig {
                path: f.path().into(),
                read_only: true,
                id: String::new()
            }),
            Err(BlockError::TooSmall(_))
        ));
    }
}
