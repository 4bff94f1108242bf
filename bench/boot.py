#!/usr/bin/env python3
"""Boot benchmark: cocoon-vmm against QEMU's microvm machine, same vmlinux,
initramfs and command line, 1 vCPU, 128 MiB, median of N boots each.

Measures, from process start (as seen by this script) to the agent's
boot-complete write to the debug port (cocoon: the VMM's boot-complete line;
QEMU: the byte arriving on an isa-debugcon chardev at the same port), and
the VMM's resident memory excluding guest RAM. Also reports, for one boot of
each, VM exits by reason from KVM's per-VM debugfs statistics.

Runs where KVM can boot Linux (tests/machine/run puts it there)."""

import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MEM_MIB = 128
BASE_CMDLINE = "reboot=k panic=-1 no_timer_check 8250.nr_uarts=0"
USER_CMDLINE = "quiet"
DEBUG_PORT = 0xCC0


def rss_excluding_guest_kib(pid, guest_bytes):
    """Sum of Rss over all mappings but the guest-RAM one(s)."""
    total = 0
    size = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:
                a, b = parts[0].split("-")
                size = int(b, 16) - int(a, 16)
            elif parts[0] == "Rss:":
                if size < guest_bytes:
                    total += int(parts[1])
    return total


def kvm_exit_stats(pid):
    """Per-VM exit counters from KVM's debugfs (root, debugfs mounted)."""
    base = "/sys/kernel/debug/kvm"
    if not os.path.isdir(base):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    try:
        dirs = [d for d in os.listdir(base) if d.startswith(f"{pid}-")]
    except OSError:
        return {}
    stats = {}
    for d in dirs:
        for name in os.listdir(os.path.join(base, d)):
            if name.endswith("exits") or name in ("insn_emulation", "hypercalls", "pf_taken", "halt_wakeup"):
                try:
                    with open(os.path.join(base, d, name)) as f:
                        stats[name] = stats.get(name, 0) + int(f.read().strip())
                except (OSError, ValueError):
                    pass
    return stats


def wait_line(proc, needle, deadline):
    buf = b""
    fd = proc.stderr.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        if needle in buf:
            return time.monotonic(), buf
    raise RuntimeError(f"did not see {needle!r}; got {buf.decode(errors='replace')}")


def boot_cocoon(args, stats=False):
    cmd = [args.vmm, "--kernel", args.kernel, "--initrd", args.initrd, "--vcpus", "1",
           "--memory-mib", str(MEM_MIB), "--cmdline", USER_CMDLINE]
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t, _ = wait_line(p, b"boot-complete ms=", start + args.timeout)
        time.sleep(0.2)  # let the guest settle before sampling memory
        rss = rss_excluding_guest_kib(p.pid, MEM_MIB << 20)
        exits = kvm_exit_stats(p.pid) if stats else {}
        return (t - start) * 1000, rss, exits
    finally:
        p.kill()
        p.wait()


def boot_qemu(args, stats=False):
    tmp = tempfile.mkdtemp()
    fifo = os.path.join(tmp, "debugcon")
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    cmd = [args.qemu, "-M", "microvm,x-option-roms=off,isa-serial=off,rtc=off,acpi=off",
           "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", str(MEM_MIB),
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", args.kernel, "-initrd", args.initrd,
           "-append", f"{BASE_CMDLINE} {USER_CMDLINE}",
           "-chardev", f"file,id=dbg,path={fifo}",
           "-device", f"isa-debugcon,iobase={DEBUG_PORT:#x},chardev=dbg"]
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = start + args.timeout
        while True:
            r, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                err = p.stderr.read1(4096) if p.poll() is not None else b""
                raise RuntimeError(f"qemu: no boot-complete byte; {err.decode(errors='replace')}")
            try:
                data = os.read(rfd, 64)
            except BlockingIOError:
                data = b""
            if b"\x01" in data:
                t = time.monotonic()
                break
            if not data:
                time.sleep(0.001)
        time.sleep(0.2)
        rss = rss_excluding_guest_kib(p.pid, MEM_MIB << 20)
        exits = kvm_exit_stats(p.pid) if stats else {}
        return (t - start) * 1000, rss, exits
    finally:
        p.kill()
        p.wait()
        os.close(rfd)
        shutil.rmtree(tmp, ignore_errors=True)


def cocoon_breakdown(args):
    """One boot with --stats: VMM setup steps, first entry, init start, boot-complete, port exits."""
    cmd = [args.vmm, "--kernel", args.kernel, "--initrd", args.initrd, "--vcpus", "1",
           "--memory-mib", str(MEM_MIB), "--cmdline", f"{USER_CMDLINE} cocoon.mode=summary", "--stats"]
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=args.timeout)
    return [l for l in out.stderr.decode(errors="replace").splitlines() if "ms" in l or "exits" in l]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    args.kernel = os.path.realpath(args.kernel)

    results = {"cocoon": ([], []), "qemu_microvm": ([], [])}
    exits = {}
    # Interleave the two so drift on a shared machine hits both alike.
    for i in range(args.runs):
        for name, fn in (("cocoon", boot_cocoon), ("qemu_microvm", boot_qemu)):
            ms, rss, ex = fn(args, stats=(i == 0))
            results[name][0].append(ms)
            results[name][1].append(rss)
            if i == 0:
                exits[name] = ex
            print(f"bench: run {i + 1}/{args.runs} {name} boot_ms={ms:.1f} rss_kib={rss}", file=sys.stderr, flush=True)

    c_ms = statistics.median(results["cocoon"][0])
    q_ms = statistics.median(results["qemu_microvm"][0])
    c_rss = statistics.median(results["cocoon"][1]) / 1024
    q_rss = statistics.median(results["qemu_microvm"][1]) / 1024
    print(f"bench: boot_to_agent_ms cocoon={c_ms:.1f} qemu_microvm={q_ms:.1f} ratio={c_ms / q_ms:.2f}")
    print(f"bench: vmm_rss_mib cocoon={c_rss:.2f} qemu_microvm={q_rss:.2f} ratio={c_rss / q_rss:.2f}")
    for name, ex in exits.items():
        if ex:
            print(f"bench: kvm_exits {name} " + " ".join(f"{k}={v}" for k, v in sorted(ex.items())))
    for line in cocoon_breakdown(args):
        print(f"bench: cocoon_breakdown {line}")


if __name__ == "__main__":
    main()
