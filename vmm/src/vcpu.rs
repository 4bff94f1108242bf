//! vCPU threads: boot-time setup of one vCPU and its run loop. Each vCPU
//! runs on its own thread and handles its own port and MMIO exits; anything
//! that ends the VM is reported through [`Shared::request_exit`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::{cpuid, msr, regs};
use crate::devices::mmio_bus::MmioBus;
use crate::devices::pio::{PioBus, PioEvent};

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// Why the guest stopped running, as seen by a vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// i8042 reset or a reset system event.
    Reset,
    /// The agent's power-off request or a shutdown system event.
    PowerOff,
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The guest reported a crash.
    Crash,
    /// KVM could not run the vCPU.
    Error(String),
}

/// A VM-level event reported while the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEvent {
    /// The boot vCPU is about to enter the guest for the first time.
    FirstEntry(Duration),
    /// The guest's init (the agent) started; time since the VMM started.
    InitStarted(Duration),
    /// The agent reported boot-complete; time since the VMM started.
    BootComplete(Duration),
}

/// Callback for [`VmEvent`]s.
pub type EventSink = Arc<dyn Fn(VmEvent) + Send + Sync>;

/// State shared by the vCPU threads and the thread that runs the VM.
pub struct Shared {
    /// Port-I/O devices.
    pub bus: PioBus,
    /// virtio-mmio devices.
    pub mmio: MmioBus,
    /// When the VMM started (the reference for reported times).
    pub start: Instant,
    /// Set to make vCPU threads leave their loops.
    pub stop: AtomicBool,
    /// First vCPU entry, since `start`.
    pub first_entry: OnceLock<Duration>,
    /// Agent started as PID 1, since `start`.
    pub init_started: OnceLock<Duration>,
    /// Agent boot-complete, since `start`.
    pub boot_complete: OnceLock<Duration>,
    stop_reason: Mutex<Option<StopReason>>,
    stop_evt: EventFd,
    events: Option<EventSink>,
}

impl Shared {
    /// Creates the shared state.
    pub fn new(
        bus: PioBus,
        mmio: MmioBus,
        start: Instant,
        events: Option<EventSink>,
    ) -> std::io::Result<Self> {
        Ok(Shared {
            bus,
            mmio,
            start,
            stop: AtomicBool::new(false),
            first_entry: OnceLock::new(),
            init_started: OnceLock::new(),
            boot_complete: OnceLock::new(),
            stop_reason: Mutex::new(None),
            stop_evt: EventFd::new(libc::EFD_CLOEXEC)?,
            events,
        })
    }

    /// Records why the VM stops (the first reason wins) and wakes the
    /// thread waiting in [`Shared::wait_for_stop`].
    pub fn request_exit(&self, reason: StopReason) {
        if let Ok(mut r) = self.stop_reason.lock() {
            if r.is_none() {
                *r = Some(reason);
            }
        }
        let _ = self.stop_evt.write(1);
    }

    /// The eventfd signalled when a stop is requested.
    pub fn stop_evt(&self) -> &EventFd {
        &self.stop_evt
    }

    /// Why the VM stops, once some vCPU asked.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason.lock().ok().and_then(|r| r.clone())
    }

    fn on_pio_event(&self, ev: PioEvent) {
        match ev {
            PioEvent::Reset => self.request_exit(StopReason::Reset),
            PioEvent::PowerOff => self.request_exit(StopReason::PowerOff),
            PioEvent::BootComplete => self.milestone(&self.boot_complete, VmEvent::BootComplete),
            PioEvent::InitStarted => self.milestone(&self.init_started, VmEvent::InitStarted),
        }
    }

    /// Records the first occurrence of a milestone and reports it.
    fn milestone(&self, slot: &OnceLock<Duration>, event: fn(Duration) -> VmEvent) {
        let t = self.start.elapsed();
        if slot.set(t).is_ok() {
            if let Some(sink) = &self.events {
                sink(event(t));
            }
        }
    }
}

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("vCPU {id}: {what}: {err}")]
    Kvm {
        /// vCPU index.
        id: u32,
        /// Which step.
        what: &'static str,
        /// Cause.
        err: kvm_ioctls::Error,
    },
    /// Register setup failed.
    #[error("vCPU {0}: {1}")]
    Regs(u32, regs::RegsError),
    /// MSR setup failed.
    #[error("vCPU {0}: {1}")]
    Msrs(u32, msr::MsrError),
}

/// Sets up vCPU `id` of `count`: CPUID, MSRs, FPU, LAPIC and, for the boot
/// processor, the entry registers.
pub fn configure(
    vcpu: &VcpuFd,
    id: u32,
    count: u32,
    base_cpuid: &CpuId,
    msr_list: &[u32],
    entry: regs::BootEntry,
) -> Result<(), VcpuError> {
    let mut c = base_cpuid.clone();
    cpuid::normalize(c.as_mut_slice(), id, count);
    vcpu.set_cpuid2(&c).map_err(|err| VcpuError::Kvm {
        id,
        what: "KVM_SET_CPUID2",
        err,
    })?;
    msr::setup_msrs(vcpu, msr_list).map_err(|e| VcpuError::Msrs(id, e))?;
    regs::setup_fpu(vcpu).map_err(|e| VcpuError::Regs(id, e))?;
    regs::setup_lapic(vcpu).map_err(|e| VcpuError::Regs(id, e))?;
    if id == 0 {
        regs::setup_vcpu_regs(vcpu, entry).map_err(|e| VcpuError::Regs(id, e))?;
    }
    Ok(())
}

/// Runs vCPU `id` until the VM stops.
pub fn run(mut vcpu: VcpuFd, id: u32, shared: Arc<Shared>) {
    if id == 0 {
        shared.milestone(&shared.first_entry, VmEvent::FirstEntry);
    }
    while !shared.stop.load(Ordering::Acquire) {
        let exit = vcpu.run();
        let stop = match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                if let Some(ev) = shared.bus.write(port, data) {
                    shared.on_pio_event(ev);
                }
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                shared.bus.read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                shared.mmio.read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                shared.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) | Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::Shutdown) => Some(StopReason::TripleFault),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
                KVM_SYSTEM_EVENT_CRASH => StopReason::Crash,
                other => StopReason::Error(format!("vCPU {id}: unknown system event {other}")),
            }),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(StopReason::Error(format!(
                "vCPU {id}: KVM entry failed, hardware reason {reason:#x} on cpu {cpu}"
            ))),
            Ok(VcpuExit::InternalError) => {
                Some(StopReason::Error(format!("vCPU {id}: KVM internal error")))
            }
            Ok(other) => Some(StopReason::Error(format!(
                "vCPU {id}: unexpected exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => Some(StopReason::Error(format!("vCPU {id}: KVM_RUN: {e}"))),
        };
        if let Some(reason) = stop {
            shared.request_exit(reason);
            break;
        }
    }
}
