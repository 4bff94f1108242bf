//! The builder: turns a validated [`VmConfig`] into a running VM and runs
//! it to the end. Opens everything (kernel, initramfs, /dev/kvm) first so
//! bad input fails before any guest state exists.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use linux_loader::loader::load_cmdline;
use linux_loader::loader::Cmdline;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::boot::{self, InitrdPlacement};
use crate::arch::x86_64::layout::{MemoryLayout, CMDLINE_ADDR, KVM_TSS_ADDR, MPTABLE_ADDR};
use crate::arch::x86_64::{mptable, regs};
use crate::config::{VmConfig, MAX_CMDLINE_LEN};
use crate::devices::mmio_bus::{self, MmioBus};
use crate::devices::pio::PioBus;
use crate::devices::serial::{self, COM1_IRQ};
use crate::devices::virtio::block::{Block, BlockConfig, BlockError};
use crate::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::net::{Net, NetConfig, NetError};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::device::VsockError;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::{ActivateError, Interrupt, VirtioDevice};
use crate::guest_panic;
use crate::loader::{self, LoadError};
use crate::memory::GuestRam;
use crate::seccomp::{Filters, SeccompError, ThreadKind};
use crate::vcpu::{self, EventSink, Shared, StopReason, VcpuError};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use std::sync::{Condvar, Mutex};
use vmm_sys_util::epoll::EventSet;

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is missing.
    #[error("/dev/kvm does not exist: is KVM enabled and the kvm module loaded?")]
    KvmMissing,
    /// /dev/kvm cannot be opened.
    #[error("/dev/kvm is not accessible: {0} (run as root or join the kvm group)")]
    KvmAccess(kvm_ioctls::Error),
    /// KVM lacks something Cocoon needs.
    #[error("KVM lacks {0}")]
    KvmCapability(&'static str),
    /// More vCPUs than KVM allows.
    #[error("{asked} vCPUs requested, KVM on this host allows at most {max}")]
    TooManyVcpus {
        /// Requested.
        asked: u32,
        /// KVM's limit.
        max: u32,
    },
    /// A KVM ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// Guest memory could not be created.
    #[error("allocating guest memory: {0}")]
    Memory(String),
    /// Loading the boot images failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Boot parameters could not be written.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Boot tables could not be written.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// vCPU setup failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// An OS resource (eventfd, thread) could not be created.
    #[error("{0}: {1}")]
    Os(&'static str, std::io::Error),
    /// The guest could not continue running.
    #[error("guest stopped: {0}")]
    Guest(String),
    /// A device could not be created.
    #[error(transparent)]
    Device(#[from] BlockError),
    /// The vsock device could not be created.
    #[error(transparent)]
    Vsock(VsockError),
    /// A net device could not be created.
    #[error(transparent)]
    Net(NetError),
    /// A seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A device's backend refused the guest's memory.
    #[error("virtio device {0}: {1}")]
    Attach(usize, ActivateError),
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// It reset (i8042 or triple fault) without panicking.
    Reset,
    /// It asked to be powered off.
    PowerOff,
    /// Its kernel panicked; the reason it logged.
    Panic(String),
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How the guest ended.
    pub exit: GuestExit,
    /// VMM start to the first vCPU entry.
    pub first_entry: Option<Duration>,
    /// VMM start to the agent's first instruction as PID 1.
    pub init_started: Option<Duration>,
    /// VMM start to the agent's boot-complete.
    pub boot_complete: Option<Duration>,
    /// Port exits that reached the VMM: (device, count).
    pub pio_exits: Vec<(&'static str, u64)>,
    /// Set-up steps and when each finished, since `start`.
    pub setup_steps: Vec<(&'static str, Duration)>,
}

/// vCPU threads run shallow exit handlers; a small stack keeps the VMM's
/// footprint small (a default 2 MiB stack can end up backed by a huge page).
const VCPU_STACK_SIZE: usize = 256 << 10;

/// Options that are not part of the VM's configuration.
pub struct RunOptions {
    /// Reference time for reported durations (the process start, ideally).
    pub start: Instant,
    /// Where the serial console writes (used only when the config enables it).
    pub console: Option<Box<dyn Write + Send>>,
    /// Receives events while the guest runs.
    pub events: Option<EventSink>,
}

fn open_kvm() -> Result<Kvm, VmError> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err(VmError::KvmMissing);
    }
    let kvm = Kvm::new().map_err(VmError::KvmAccess)?;
    for (cap, name) in [
        (Cap::Irqchip, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
        (Cap::Ioeventfd, "ioeventfd (KVM_CAP_IOEVENTFD)"),
        (Cap::Pit2, "an in-kernel PIT (KVM_CAP_PIT2)"),
        (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::KvmCapability(name));
        }
    }
    Ok(kvm)
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmError::Memory(e.to_string()))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host..host+len` is a live mapping owned by the `GuestRam`, which
        // the caller keeps alive for as long as the VM fd exists (the VM is
        // dropped before the memory in `run`).
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|e| VmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that knocks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

fn install_kick_handler() -> Result<(), VmError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| {
                VmError::Os(
                    "installing the vCPU kick signal handler",
                    std::io::Error::from_raw_os_error(e.errno()),
                )
            });
    });
    result
}

/// Boots the VM described by `config` and runs it until the guest resets,
/// powers off or panics. Every thread started here is joined before it
/// returns, and all guest memory is released.
pub fn run(config: &VmConfig, opts: RunOptions) -> Result<RunReport, VmError> {
    let start = opts.start;
    let mut steps: Vec<(&'static str, Duration)> = Vec::with_capacity(8);
    let mut step = |name: &'static str| steps.push((name, start.elapsed()));
    // Bad input first, before any KVM state exists.
    let initrd = config
        .initrd
        .as_deref()
        .map(loader::open_initrd)
        .transpose()?;
    std::fs::File::open(&config.kernel).map_err(|err| LoadError::KernelRead {
        path: config.kernel.display().to_string(),
        err,
    })?;
    let virtio = create_virtio_devices(config)?;
    let device_slots: Vec<(u64, u32)> = (0..virtio.len()).map(mmio_bus::slot).collect();

    let kvm = open_kvm()?;
    let max = kvm.get_max_vcpus().min(u32::MAX as usize) as u32;
    if config.vcpus > max {
        return Err(VmError::TooManyVcpus {
            asked: config.vcpus,
            max,
        });
    }
    install_kick_handler()?;
    step("kvm_open");

    let layout = MemoryLayout::new(config.memory_mib << 20);
    let ram = GuestRam::new(&layout.ram_regions()).map_err(|e| VmError::Memory(e.to_string()))?;
    let mem = ram.memory();
    step("memory_mapped");
    let kernel = loader::load_kernel(mem, &layout, &config.kernel)?;
    step("kernel_loaded");
    let initrd_at = match initrd {
        Some((mut file, size)) => {
            let addr_max = kernel
                .setup_header
                .map(|h| u64::from(h.initrd_addr_max))
                .filter(|&m| m != 0);
            let at = loader::place_initrd(&layout, kernel.end, size, addr_max)?;
            loader::load_initrd(
                mem,
                &mut file,
                config.initrd.as_deref().unwrap_or(std::path::Path::new("")),
                at,
            )?;
            Some(at)
        }
        None => None,
    };
    let cmdline_text = loader::build_cmdline(
        config.console,
        layout.ramoops(),
        &device_slots,
        &config.cmdline,
    )?;
    let mut cmdline = Cmdline::new(MAX_CMDLINE_LEN).map_err(|_| LoadError::CmdlineTooLong {
        len: 0,
        max: MAX_CMDLINE_LEN - 1,
    })?;
    cmdline
        .insert_str(&cmdline_text)
        .map_err(|_| LoadError::CmdlineTooLong {
            len: cmdline_text.len(),
            max: MAX_CMDLINE_LEN - 1,
        })?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline).map_err(|_| {
        LoadError::CmdlineTooLong {
            len: cmdline_text.len(),
            max: MAX_CMDLINE_LEN - 1,
        }
    })?;
    write_boot_params(mem, &layout, &kernel, cmdline_text.len(), initrd_at)?;
    let table = mptable::build(MPTABLE_ADDR as u32, config.vcpus as u8);
    mem.write_slice(&table, GuestAddress(MPTABLE_ADDR))
        .map_err(LoadError::Memory)?;
    regs::write_boot_tables(mem, kernel.entry)?;
    step("boot_params_written");

    let vm = kvm
        .create_vm()
        .map_err(|e| VmError::Kvm("KVM_CREATE_VM", e))?;
    vm.set_tss_address(KVM_TSS_ADDR)
        .map_err(|e| VmError::Kvm("KVM_SET_TSS_ADDR", e))?;
    vm.create_irq_chip()
        .map_err(|e| VmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| VmError::Kvm("KVM_CREATE_PIT2", e))?;
    register_memory(&vm, mem)?;
    step("vm_created");

    let console = match (config.console, opts.console) {
        (true, Some(out)) => {
            let irq = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(|e| VmError::Os("eventfd", e))?;
            vm.register_irqfd(&irq, COM1_IRQ)
                .map_err(|e| VmError::Kvm("KVM_IRQFD", e))?;
            Some(serial::console(irq, out))
        }
        (true, None) => {
            let irq = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(|e| VmError::Os("eventfd", e))?;
            vm.register_irqfd(&irq, COM1_IRQ)
                .map_err(|e| VmError::Kvm("KVM_IRQFD", e))?;
            Some(serial::console(irq, Box::new(std::io::stdout())))
        }
        (false, _) => None,
    };
    let mut event_manager = EventManager::<Subscriber>::new().map_err(|e| {
        VmError::Os(
            "creating the event loop",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let mmio = attach_virtio_devices(&vm, mem, virtio, &mut event_manager)?;
    let shared = Arc::new(
        Shared::new(PioBus::new(console), mmio, start, opts.events)
            .map_err(|e| VmError::Os("eventfd", e))?,
    );

    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    let msr_list = kvm
        .get_msr_index_list()
        .map_err(|e| VmError::Kvm("KVM_GET_MSR_INDEX_LIST", e))?;
    let mut vcpus = Vec::with_capacity(config.vcpus as usize);
    for id in 0..config.vcpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VmError::Kvm("KVM_CREATE_VCPU", e))?;
        vcpu::configure(
            &fd,
            id,
            config.vcpus,
            &base_cpuid,
            msr_list.as_slice(),
            kernel.entry,
        )?;
        vcpus.push(fd);
    }
    step("vcpus_configured");

    // Everything is built: from here on the threads get by with the calls
    // in their seccomp allow-lists. Each vCPU thread installs its own
    // filter, then waits at the gate until this thread has installed its
    // filter too, so no guest instruction runs while any VMM thread is
    // unfiltered.
    let vhost = config.nets.iter().any(|n| n.vhost);
    let filters =
        Filters::build(config.seccomp, std::process::id() as libc::pid_t, vhost)?.map(Arc::new);
    let gate = Arc::new(StartGate::default());
    let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
    let mut spawn_error = None;
    for (id, fd) in vcpus.into_iter().enumerate() {
        let shared_for_thread = shared.clone();
        let gate_for_thread = gate.clone();
        let filters_for_thread = filters.clone();
        match std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .stack_size(VCPU_STACK_SIZE)
            .spawn(move || {
                if let Some(f) = filters_for_thread {
                    if let Err(e) = f.install(ThreadKind::Vcpu) {
                        shared_for_thread
                            .request_exit(StopReason::Error(format!("vCPU {id}: {e}")));
                        return;
                    }
                }
                if gate_for_thread.wait() {
                    vcpu::run(fd, id as u32, shared_for_thread)
                }
            }) {
            Ok(h) => threads.push(h),
            Err(e) => {
                spawn_error = Some(VmError::Os("spawning a vCPU thread", e));
                shared.request_exit(StopReason::Error("vCPU thread spawn failed".into()));
                break;
            }
        }
    }
    if let Some(f) = &filters {
        if let Err(e) = f.install(ThreadKind::Vmm) {
            gate.open(false);
            stop_vcpus(&shared, threads);
            return Err(e.into());
        }
    }
    drop(filters);
    gate.open(true);
    step("seccomp_installed");

    let reason = run_event_loop(&mut event_manager, &shared);
    stop_vcpus(&shared, threads);
    // Devices hold clones of the guest memory: they go before the memory.
    drop(event_manager);
    if let Some(e) = spawn_error {
        return Err(e);
    }

    let counters = &shared.bus.counters;
    let pio_exits = vec![
        ("serial", counters.serial.load(Ordering::Relaxed)),
        ("i8042", counters.i8042.load(Ordering::Relaxed)),
        ("debug", counters.debug.load(Ordering::Relaxed)),
        ("unclaimed", counters.unclaimed.load(Ordering::Relaxed)),
    ];
    let exit = match reason {
        StopReason::PowerOff => GuestExit::PowerOff,
        StopReason::Reset | StopReason::TripleFault => {
            match guest_panic::read_panic(mem, layout.ramoops()) {
                Some(why) => GuestExit::Panic(why),
                None => GuestExit::Reset,
            }
        }
        StopReason::Crash => GuestExit::Panic(
            guest_panic::read_panic(mem, layout.ramoops())
                .unwrap_or_else(|| "guest reported a crash".into()),
        ),
        StopReason::Error(e) => return Err(VmError::Guest(e)),
    };
    let report = RunReport {
        exit,
        first_entry: shared.first_entry.get().copied(),
        init_started: shared.init_started.get().copied(),
        boot_complete: shared.boot_complete.get().copied(),
        pio_exits,
        setup_steps: steps,
    };
    // The devices, the VM (and its vCPU fds, already dropped with their
    // threads) go before the memory they map.
    drop(shared);
    drop(vm);
    drop(ram);
    Ok(report)
}

/// Holds the vCPU threads back until the VMM thread is ready (its seccomp
/// filter installed): `true` lets them run the guest, `false` ends them.
#[derive(Default)]
struct StartGate {
    go: Mutex<Option<bool>>,
    opened: Condvar,
}

impl StartGate {
    fn open(&self, go: bool) {
        if let Ok(mut g) = self.go.lock() {
            *g = Some(go);
        }
        self.opened.notify_all();
    }

    fn wait(&self) -> bool {
        let Ok(mut g) = self.go.lock() else {
            return false;
        };
        loop {
            if let Some(go) = *g {
                return go;
            }
            g = match self.opened.wait(g) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
    }
}

/// What the event loop holds: every device's event handler.
type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A virtio device, seen both as a device (by its transport) and as an
/// event subscriber (by the event loop).
struct VirtioSlot {
    device: Arc<Mutex<dyn VirtioDevice>>,
    subscriber: Subscriber,
}

impl VirtioSlot {
    fn new<D: VirtioDevice + MutEventSubscriber + 'static>(d: D) -> Self {
        let shared = Arc::new(Mutex::new(d));
        VirtioSlot {
            device: shared.clone(),
            subscriber: shared,
        }
    }
}

/// Creates the configured virtio devices, in slot order: drives, nets,
/// vsock, rng.
/// Opens their backends, so bad paths fail before any KVM state exists.
fn create_virtio_devices(config: &VmConfig) -> Result<Vec<VirtioSlot>, VmError> {
    let mut slots = Vec::new();
    for d in &config.drives {
        let cfg = BlockConfig {
            path: d.path.clone(),
            read_only: d.read_only,
            id: d.id.clone(),
        };
        slots.push(VirtioSlot::new(Block::new(&cfg).map_err(VmError::Device)?));
    }
    for n in &config.nets {
        let cfg = NetConfig {
            tap: n.tap.clone(),
            mac: n.mac,
            vhost: n.vhost,
        };
        slots.push(VirtioSlot::new(Net::new(&cfg).map_err(VmError::Net)?));
    }
    if let Some(path) = &config.vsock {
        slots.push(VirtioSlot::new(Vsock::new(path).map_err(VmError::Vsock)?));
    }
    if config.rng {
        slots.push(VirtioSlot::new(
            Rng::new().map_err(|e| VmError::Os("creating virtio-rng", e))?,
        ));
    }
    Ok(slots)
}

/// Wires each device to KVM (irqfd for its interrupt, ioeventfds for its
/// queue notifications), to the MMIO bus and to the event loop.
fn attach_virtio_devices(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    slots: Vec<VirtioSlot>,
    event_manager: &mut EventManager<Subscriber>,
) -> Result<MmioBus, VmError> {
    let mut bus = MmioBus::default();
    for (index, slot) in slots.into_iter().enumerate() {
        let (base, irq) = mmio_bus::slot(index);
        let irqfd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| VmError::Os("eventfd", e))?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(|e| VmError::Kvm("KVM_IRQFD", e))?;
        {
            let mut device = slot
                .device
                .lock()
                .map_err(|_| VmError::Guest("device lock poisoned".into()))?;
            device
                .attach_memory(mem)
                .map_err(|e| VmError::Attach(index, e))?;
            for (queue, evt) in device.queue_events().iter().enumerate() {
                let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET);
                vm.register_ioevent(evt, &addr, queue as u32)
                    .map_err(|e| VmError::Kvm("KVM_IOEVENTFD", e))?;
            }
        }
        bus.push(MmioTransport::new(
            slot.device,
            mem.clone(),
            Interrupt::new(irqfd),
        ));
        event_manager.add_subscriber(slot.subscriber);
    }
    Ok(bus)
}

/// Watches the stop eventfd from inside the event loop.
struct StopWatcher {
    shared: Arc<Shared>,
    reason: Option<StopReason>,
}

impl MutEventSubscriber for StopWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.shared.stop_evt().read();
        if self.reason.is_none() {
            self.reason = self.shared.stop_reason();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(self.shared.stop_evt(), EventSet::IN));
    }
}

/// Runs the device event loop on this thread until a vCPU asks the VM to
/// stop; returns why.
fn run_event_loop(
    event_manager: &mut EventManager<Subscriber>,
    shared: &Arc<Shared>,
) -> StopReason {
    let watcher = Arc::new(Mutex::new(StopWatcher {
        shared: shared.clone(),
        reason: None,
    }));
    event_manager.add_subscriber(watcher.clone());
    loop {
        if event_manager.run().is_err() {
            // epoll itself failed: nothing can be served any more.
            return StopReason::Error("the device event loop failed".into());
        }
        if let Some(reason) = watcher.lock().ok().and_then(|w| w.reason.clone()) {
            return reason;
        }
    }
}

fn write_boot_params(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &loader::LoadedKernel,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
) -> Result<(), VmError> {
    match kernel.entry {
        regs::BootEntry::Pvh { .. } => boot::write_pvh(mem, layout, initrd)?,
        regs::BootEntry::Linux64 { .. } => {
            let params = boot::zero_page(layout, kernel.setup_header, cmdline_len, initrd)?;
            boot::write_zero_page(mem, &params)?;
        }
    }
    Ok(())
}

/// Makes every vCPU thread leave KVM_RUN and joins it.
fn stop_vcpus(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    use std::os::unix::thread::JoinHandleExt;
    shared.stop.store(true, Ordering::Release);
    for t in threads {
        // A kick can land just before the thread enters KVM_RUN; repeat
        // until the thread is gone.
        while !t.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is
            // valid; the signal has a no-op handler installed.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = t.join();
    }
}
