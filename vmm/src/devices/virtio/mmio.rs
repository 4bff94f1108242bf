//! The virtio-mmio transport (virtio 1.2, section 4.2, version 2 "modern"
//! registers only). Every guest access is first decoded into a typed
//! [`Register`] by a pure function; accesses at unknown offsets, with the
//! wrong width or alignment, or out of order in the driver's state machine
//! are ignored (reads return zero). The transport validates the queues the
//! driver configured against guest memory before it activates the device;
//! a device that fails to activate is flagged DEVICE_NEEDS_RESET.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{Interrupt, VirtioDevice, INT_CONFIG, VIRTIO_F_VERSION_1};

/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
/// "COCO", our vendor id.
const VENDOR_ID: u32 = 0x4f43_4f43;
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// A decoded register access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// 0x000 MagicValue (R).
    Magic,
    /// 0x004 Version (R).
    Version,
    /// 0x008 DeviceID (R).
    DeviceId,
    /// 0x00c VendorID (R).
    VendorId,
    /// 0x010 DeviceFeatures (R).
    DeviceFeatures,
    /// 0x014 DeviceFeaturesSel (W).
    DeviceFeaturesSel,
    /// 0x020 DriverFeatures (W).
    DriverFeatures,
    /// 0x024 DriverFeaturesSel (W).
    DriverFeaturesSel,
    /// 0x030 QueueSel (W).
    QueueSel,
    /// 0x034 QueueNumMax (R).
    QueueNumMax,
    /// 0x038 QueueNum (W).
    QueueNum,
    /// 0x044 QueueReady (RW).
    QueueReady,
    /// 0x050 QueueNotify (W).
    QueueNotify,
    /// 0x060 InterruptStatus (R).
    InterruptStatus,
    /// 0x064 InterruptACK (W).
    InterruptAck,
    /// 0x070 Status (RW).
    Status,
    /// 0x080/0x084 QueueDescLow/High (W); `true` = high half.
    QueueDesc(bool),
    /// 0x090/0x094 QueueDriverLow/High (W).
    QueueDriver(bool),
    /// 0x0a0/0x0a4 QueueDeviceLow/High (W).
    QueueDevice(bool),
    /// 0x0fc ConfigGeneration (R).
    ConfigGeneration,
    /// 0x100.. device configuration space, at this offset into it.
    Config(u64),
    /// Anything else: unknown offset, or a register accessed with a width
    /// other than 32 bits or misaligned.
    Invalid,
}

impl Register {
    /// Decodes an access of `len` bytes at `offset` into the window.
    pub fn decode(offset: u64, len: usize) -> Register {
        if offset >= CONFIG_SPACE {
            return if offset < MMIO_WINDOW
                && matches!(len, 1 | 2 | 4 | 8)
                && offset + len as u64 <= MMIO_WINDOW
            {
                Register::Config(offset - CONFIG_SPACE)
            } else {
                Register::Invalid
            };
        }
        if len != 4 || !offset.is_multiple_of(4) {
            return Register::Invalid;
        }
        match offset {
            0x000 => Register::Magic,
            0x004 => Register::Version,
            0x008 => Register::DeviceId,
            0x00c => Register::VendorId,
            0x010 => Register::DeviceFeatures,
            0x014 => Register::DeviceFeaturesSel,
            0x020 => Register::DriverFeatures,
            0x024 => Register::DriverFeaturesSel,
            0x030 => Register::QueueSel,
            0x034 => Register::QueueNumMax,
            0x038 => Register::QueueNum,
            0x044 => Register::QueueReady,
            0x050 => Register::QueueNotify,
            0x060 => Register::InterruptStatus,
            0x064 => Register::InterruptAck,
            0x070 => Register::Status,
            0x080 => Register::QueueDesc(false),
            0x084 => Register::QueueDesc(true),
            0x090 => Register::QueueDriver(false),
            0x094 => Register::QueueDriver(true),
            0x0a0 => Register::QueueDevice(false),
            0x0a4 => Register::QueueDevice(true),
            0x0fc => Register::ConfigGeneration,
            _ => Register::Invalid,
        }
    }
}

/// Offset of QueueNotify, where KVM ioeventfds are registered.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// One virtio device behind its register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    device_type: u32,
    offered: u64,
    status: u32,
    features_sel: u32,
    driver_features_sel: u32,
    acked: u64,
    queue_sel: u32,
    /// Queues whose driver-written size was invalid (zero, too large, not a
    /// power of two): such a queue can never be activated.
    bad_size: Vec<bool>,
    active: bool,
    /// An activation failed and was logged (later ones are not).
    activation_failed: bool,
}

impl MmioTransport {
    /// Wraps `device`; its queues are created at their maximum sizes.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
    ) -> Self {
        let (sizes, device_type, offered) = match device.lock() {
            Ok(d) => (
                d.queue_max_sizes().to_vec(),
                d.device_type(),
                d.features() | VIRTIO_F_VERSION_1,
            ),
            Err(_) => (Vec::new(), 0, 0),
        };
        let queues: Vec<Queue> = sizes.iter().filter_map(|&s| Queue::new(s).ok()).collect();
        let bad_size = vec![false; queues.len()];
        MmioTransport {
            bad_size,
            device,
            mem,
            interrupt,
            queues,
            device_type,
            offered,
            status: 0,
            features_sel: 0,
            driver_features_sel: 0,
            acked: 0,
            activation_failed: false,
            queue_sel: 0,
            active: false,
        }
    }

    /// The device's status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may only change between FEATURES_OK and DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    /// Handles a guest read.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let reg = Register::decode(offset, data.len());
        if let Register::Config(off) = reg {
            match self.device.lock() {
                Ok(d) => d.read_config(off, data),
                Err(_) => data.fill(0),
            }
            return;
        }
        let v: u32 = match reg {
            Register::Magic => MAGIC,
            Register::Version => VERSION,
            Register::DeviceId => self.device_type,
            Register::VendorId => VENDOR_ID,
            Register::DeviceFeatures => match self.features_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            Register::QueueNumMax => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            Register::QueueReady => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            Register::InterruptStatus => self.interrupt.status(),
            Register::Status => self.status,
            Register::ConfigGeneration => 0,
            _ => 0,
        };
        if data.len() == 4 {
            data.copy_from_slice(&v.to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    /// Handles a guest write.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let reg = Register::decode(offset, data.len());
        if let Register::Config(off) = reg {
            if self.status & status::DRIVER != 0 {
                if let Ok(mut d) = self.device.lock() {
                    d.write_config(off, data);
                }
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        match reg {
            Register::DeviceFeaturesSel => self.features_sel = v,
            Register::DriverFeaturesSel => self.driver_features_sel = v,
            Register::DriverFeatures
                if self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0 =>
            {
                match self.driver_features_sel {
                    0 => self.acked = (self.acked & !0xffff_ffff) | u64::from(v),
                    1 => self.acked = (self.acked & 0xffff_ffff) | (u64::from(v) << 32),
                    _ => {}
                }
            }
            Register::QueueSel => self.queue_sel = v,
            Register::QueueNum if self.queue_setup_allowed() => {
                let sel = self.queue_sel as usize;
                if let Some(q) = self.queues.get_mut(sel) {
                    let ok = v != 0 && v <= u32::from(q.max_size()) && v.is_power_of_two();
                    if ok {
                        q.set_size(v as u16);
                    }
                    if let Some(flag) = self.bad_size.get_mut(sel) {
                        *flag = !ok;
                    }
                }
            }
            Register::QueueReady if self.queue_setup_allowed() => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            Register::QueueDesc(high) if self.queue_setup_allowed() => {
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_desc_table_address(None, Some(v))
                    } else {
                        q.set_desc_table_address(Some(v), None)
                    }
                }
            }
            Register::QueueDriver(high) if self.queue_setup_allowed() => {
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_avail_ring_address(None, Some(v))
                    } else {
                        q.set_avail_ring_address(Some(v), None)
                    }
                }
            }
            Register::QueueDevice(high) if self.queue_setup_allowed() => {
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_used_ring_address(None, Some(v))
                    } else {
                        q.set_used_ring_address(Some(v), None)
                    }
                }
            }
            // Normally caught by an ioeventfd in KVM; a write KVM did not
            // match (e.g. a queue index past the end) lands here.
            Register::QueueNotify if self.active => {
                if let Ok(d) = self.device.lock() {
                    if let Some(evt) = d.queue_events().get(v as usize) {
                        let _ = evt.write(1);
                    }
                }
            }
            Register::InterruptAck => self.interrupt.ack(v),
            Register::Status => self.set_status(v),
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // Bits may only be added, never removed (except by a reset).
        if v & self.status != self.status {
            return;
        }
        let added = v & !self.status;
        if added & status::FEATURES_OK != 0 {
            let ok = self.acked & !self.offered == 0
                && self.acked & VIRTIO_F_VERSION_1 != 0
                && v & status::DRIVER != 0;
            if !ok {
                self.status = v & !status::FEATURES_OK;
                return;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if v & status::FEATURES_OK == 0 {
                return;
            }
            self.status = v;
            self.activate();
            return;
        }
        self.status = v;
    }

    fn activate(&mut self) {
        let mem = &self.mem;
        let bad = self
            .queues
            .iter()
            .position(|q| !q.ready() || !q.is_valid(mem))
            .or_else(|| self.bad_size.iter().position(|&b| b));
        let result = match bad {
            Some(_) => Err(()),
            None => match self.device.lock() {
                Ok(mut d) => d
                    .activate(
                        self.mem.clone(),
                        self.interrupt.clone(),
                        std::mem::take(&mut self.queues),
                        self.acked,
                    )
                    .map_err(|e| {
                        if !self.activation_failed {
                            // Once per device: a guest that keeps failing
                            // must not fill the log.
                            eprintln!(
                                "cocoon-vmm: virtio device (type {}) activation failed: {e}",
                                self.device_type
                            );
                            self.activation_failed = true;
                        }
                    }),
                Err(_) => Err(()),
            },
        };
        match result {
            Ok(()) => self.active = true,
            Err(()) => {
                self.status |= status::DEVICE_NEEDS_RESET;
                self.interrupt.trigger(INT_CONFIG);
            }
        }
    }

    fn reset(&mut self) {
        if let Ok(mut d) = self.device.lock() {
            d.reset();
        }
        let sizes: Vec<u16> = match self.device.lock() {
            Ok(d) => d.queue_max_sizes().to_vec(),
            Err(_) => Vec::new(),
        };
        self.queues = sizes.iter().filter_map(|&s| Queue::new(s).ok()).collect();
        self.bad_size = vec![false; self.queues.len()];
        self.status = 0;
        self.features_sel = 0;
        self.driver_features_sel = 0;
        self.acked = 0;
        self.queue_sel = 0;
        self.active = false;
        self.interrupt.ack(u32::MAX);
        self.interrupt.set_rings_elsewhere(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::ActivateError;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        evts: Vec<EventFd>,
        activated: Option<usize>,
        resets: usize,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[0xaa, 0xbb], offset, data)
        }
        fn queue_events(&self) -> &[EventFd] {
            &self.evts
        }
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            _: Interrupt,
            queues: Vec<Queue>,
            _: u64,
        ) -> Result<(), ActivateError> {
            self.activated = Some(queues.len());
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.activated = None;
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Dummy>>) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let dev = Arc::new(Mutex::new(Dummy {
            evts: vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()],
            activated: None,
            resets: 0,
        }));
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (MmioTransport::new(dev.clone(), mem, irq), dev)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn negotiate(t: &mut MmioTransport) {
        w(t, 0x70, status::ACKNOWLEDGE);
        w(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(t, 0x24, 1);
        w(t, 0x20, 1); // VERSION_1
        w(
            t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport, size: u32) {
        w(t, 0x30, 0);
        w(t, 0x38, size);
        w(t, 0x80, 0x1000);
        w(t, 0x90, 0x2000);
        w(t, 0xa0, 0x3000);
        w(t, 0x44, 1);
    }

    const ALL: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identity_registers() {
        let (mut t, _) = setup();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 4);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 is offered");
        assert_eq!(r(&mut t, 0x34), 16);
    }

    #[test]
    fn full_handshake_activates() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        assert_ne!(t.status() & status::FEATURES_OK, 0);
        setup_queue(&mut t, 16);
        w(&mut t, 0x70, ALL);
        assert_eq!(dev.lock().unwrap().activated, Some(1));
        assert_eq!(t.status(), ALL);
    }

    #[test]
    fn features_without_version_1_are_refused() {
        let (mut t, _) = setup();
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(t.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn unoffered_features_are_refused() {
        let (mut t, _) = setup();
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1 | (1 << 5));
        w(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(t.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn queue_size_not_a_power_of_two_fails_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queue(&mut t, 12);
        w(&mut t, 0x70, ALL);
        assert_eq!(dev.lock().unwrap().activated, None);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn queue_outside_guest_memory_fails_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queue(&mut t, 16);
        w(&mut t, 0x30, 0);
        w(&mut t, 0x44, 0);
        // Queue registers are writable again only before DRIVER_OK; point
        // the used ring past the end of memory.
        w(&mut t, 0xa0, 0xffff_f000);
        w(&mut t, 0x44, 1);
        w(&mut t, 0x70, ALL);
        assert_eq!(dev.lock().unwrap().activated, None);
        assert_ne!(t.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn queue_not_ready_fails_activation() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        w(&mut t, 0x70, ALL);
        assert_eq!(dev.lock().unwrap().activated, None);
    }

    #[test]
    fn queue_registers_are_frozen_after_driver_ok() {
        let (mut t, _) = setup();
        negotiate(&mut t);
        setup_queue(&mut t, 16);
        w(&mut t, 0x70, ALL);
        w(&mut t, 0x38, 4);
        w(&mut t, 0x44, 0);
        // The transport gave its queues to the device; nothing left to change.
        assert_eq!(r(&mut t, 0x44), 0);
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_reset() {
        let (mut t, _) = setup();
        negotiate(&mut t);
        w(&mut t, 0x70, status::ACKNOWLEDGE);
        assert_ne!(t.status() & status::FEATURES_OK, 0);
    }

    #[test]
    fn reset_returns_to_initial_state() {
        let (mut t, dev) = setup();
        negotiate(&mut t);
        setup_queue(&mut t, 16);
        w(&mut t, 0x70, ALL);
        w(&mut t, 0x70, 0);
        assert_eq!(t.status(), 0);
        assert_eq!(dev.lock().unwrap().resets, 1);
        assert_eq!(r(&mut t, 0x34), 16, "queues are back");
        negotiate(&mut t);
        setup_queue(&mut t, 16);
        w(&mut t, 0x70, ALL);
        assert_eq!(dev.lock().unwrap().activated, Some(1));
    }

    #[test]
    fn odd_widths_and_offsets_are_ignored() {
        let (mut t, _) = setup();
        let mut b = [0xffu8; 2];
        t.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        let mut b = [0xffu8; 4];
        t.read(0x2, &mut b);
        assert_eq!(b, [0; 4]);
        t.read(0x40, &mut b);
        assert_eq!(b, [0; 4]);
        t.write(0x70, &[1, 0]);
        t.write(0x71, &[1, 0, 0, 0]);
        assert_eq!(t.status(), 0);
        let mut big = [0u8; 16];
        t.read(0x100, &mut big);
        t.write(0xfff, &[1, 2]);
    }

    #[test]
    fn config_space_reads_go_to_the_device() {
        let (mut t, _) = setup();
        let mut b = [0u8; 1];
        t.read(0x101, &mut b);
        assert_eq!(b, [0xbb]);
        assert_eq!(Register::decode(0xffc, 4), Register::Config(0xefc));
        assert_eq!(Register::decode(0xffc, 8), Register::Invalid);
        assert_eq!(Register::decode(0x1000, 1), Register::Invalid);
    }

    #[test]
    fn notify_before_activation_is_ignored() {
        let (mut t, dev) = setup();
        w(&mut t, 0x50, 0);
        assert!(dev.lock().unwrap().evts[0].read().is_err());
        w(&mut t, 0x50, 7);
    }
}
