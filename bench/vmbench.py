"""Shared by the device benchmarks (blk.py, vsock.py): how cocoon-vmm and
QEMU's microvm machine are started on the same kernel, test initramfs
(tests/guest, steps on the command line as `cocoon.test=...`), vCPUs and
memory, how the guest's `cocoon-test:` result lines are read, and how the
`bench:` lines are printed. Not a library for anything else."""

import os
import select
import shutil
import statistics
import subprocess
import sys
import time

VCPUS = 1
MEM_MIB = 256


def add_common_args(ap):
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True, help="the test initramfs (make test-initramfs)")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=600)


def resolve_paths(args):
    for name in ("vmm", "kernel", "initrd"):
        setattr(args, name, os.path.realpath(getattr(args, name)))


def cocoon_cmd(args, steps, devices=()):
    """cocoon-vmm with the guest console on stdout; rng off (QEMU has none)."""
    return [args.vmm, "--kernel", args.kernel, "--initrd", args.initrd,
            "--vcpus", str(VCPUS), "--memory-mib", str(MEM_MIB), "--console", "--no-rng",
            *devices, "--cmdline", f"quiet cocoon.test={steps}"]


def qemu_cmd(args, steps, devices=()):
    """QEMU microvm, KVM, no default devices; it announces its virtio-mmio
    devices on the command line itself, as cocoon-vmm does."""
    return [args.qemu, "-M", "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-enable-kvm", "-cpu", "host", "-smp", str(VCPUS), "-m", str(MEM_MIB),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", args.kernel, "-initrd", args.initrd,
            "-append", f"console=ttyS0 reboot=k panic=-1 no_timer_check quiet cocoon.test={steps}",
            "-serial", "stdio", *devices]


class Guest:
    """A running VM whose console (stdout and stderr merged) is read line by line."""

    def __init__(self, name, cmd, timeout):
        self.name = name
        self.deadline = time.monotonic() + timeout
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.buf = b""
        self.log = b""

    def _line(self):
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not r:
                raise RuntimeError(f"{self.name}: timed out\n{self.tail()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{self.name}: VM ended early\n{self.tail()}")
            self.buf += chunk
            self.log += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def tail(self):
        return self.log.decode(errors="replace")[-3000:]

    def wait_for(self, prefix):
        """The next `cocoon-test: <prefix>...` line, without the tag. A
        result line carrying `error=` raises."""
        while True:
            line = self._line()
            i = line.find("cocoon-test: ")
            if i < 0:
                continue
            rest = line[i + len("cocoon-test: "):]
            if rest.startswith(prefix):
                if "error=" in rest:
                    raise RuntimeError(f"{self.name}: {rest}")
                return rest
            if rest.startswith("bad step") or "error=" in rest:
                raise RuntimeError(f"{self.name}: {rest}")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def progress(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def report(metric, results, fmt="{:.1f}"):
    """`bench: METRIC cocoon=<median> [qemu_microvm=<median> ratio=<c/q>]`."""
    c = statistics.median(results["cocoon"])
    line = f"bench: {metric} cocoon={fmt.format(c)}"
    if results.get("qemu_microvm"):
        q = statistics.median(results["qemu_microvm"])
        line += f" qemu_microvm={fmt.format(q)} ratio={c / q:.2f}"
    print(line, flush=True)
