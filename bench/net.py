#!/usr/bin/env python3
"""Network benchmark: host->guest TCP throughput through a TAP, cocoon-vmm's
virtio-net against QEMU's microvm machine with virtio-net-device on a tap
netdev. Each VMM runs both ways: frames through the kernel's vhost-net
(cocoon-vmm `vhost=on`, what cocoond uses where /dev/vhost-net exists;
QEMU `vhost=on`) and through the VMM's own userspace device (cocoon-vmm
`vhost=off`; QEMU `vhost=off`, QEMU's default for a tap netdev). Same
vmlinux, same test initramfs (tests/guest: `net-up`, then `tcp-sink` reads
until EOF and reports the rate it measured), 1 vCPU, 256 MiB, median of N
runs each, the four interleaved.

Everything happens in a network namespace this script creates and deletes:
the TAP `cctap0` there has 10.0.2.1/24, the guest 10.0.2.2/24; the host
side is a sender in the same namespace. Needs root and a KVM that can
boot Linux (tests/machine/run puts it there); prints

    bench: net_tcp_gbits cocoon=<x> qemu_microvm=<y> ratio=<x/y>
    bench: net_tcp_gbits_vhost cocoon=<x> qemu_microvm=<y> ratio=<x/y>
    bench: net_tcp_gbits_userspace cocoon=<x> qemu_microvm=<y> ratio=<x/y>

The first line compares Cocoon as cocoond runs it (vhost-net) with QEMU's
default tap netdev (userspace); the other two compare like with like.

and on stderr, per run, what the transfer cost each VMM per MiB received
(from KVM's debugfs statistics of that VM and the VMM's /proc entries,
between the guest's `net-up` and `tcp-sink` lines): VM exits, interrupts
injected, halts, the VMM's CPU time and its context switches.
"""

import argparse
import glob
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

MEM_MIB = 256
HOST_IP = "10.0.2.1"
GUEST = "10.0.2.2/24"
MAC = "02:cc:00:00:00:02"
TAP = "cctap0"
PORT = 5301


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def serve(port, mib):
    """Runs inside the namespace: send `mib` MiB to the first client."""
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((HOST_IP, port))
    l.listen(1)
    print("ready", flush=True)
    c, _ = l.accept()
    buf = os.urandom(1 << 20)
    for _ in range(mib):
        c.sendall(buf)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()


def steps(port):
    return f"net-up:{GUEST},tcp-sink:{HOST_IP}:{port}"


def cocoon_cmd(args, port, vhost):
    return [args.vmm, "--kernel", args.kernel, "--initrd", args.initrd, "--vcpus", "1",
            "--memory-mib", str(MEM_MIB), "--console", "--no-rng",
            "--net", f"tap={TAP},mac={MAC},vhost={vhost}",
            "--cmdline", f"quiet cocoon.test={steps(port)}"]


def qemu_cmd(args, port, vhost):
    return [args.qemu, "-M", "microvm,x-option-roms=off,rtc=off,acpi=off",
            "-enable-kvm", "-cpu", "host", "-smp", "1", "-m", str(MEM_MIB),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", args.kernel, "-initrd", args.initrd,
            "-append", f"console=ttyS0 reboot=k panic=-1 no_timer_check quiet cocoon.test={steps(port)}",
            "-serial", "stdio",
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vhost={vhost}",
            "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
STATS = ["exits", "irq_injections", "halt_exits", "io_exits", "mmio_exits", "irq_exits", "signal_exits"]


def vm_stats(pid):
    """KVM's counters for the VM of process `pid` and the process's CPU time
    and context switches (all threads); {} if unreadable."""
    out = {}
    for d in glob.glob(f"/sys/kernel/debug/kvm/{pid}-*"):
        for name in STATS:
            try:
                out[name] = out.get(name, 0) + int(open(os.path.join(d, name)).read())
            except (OSError, ValueError):
                pass
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        out["cpu_ms"] = (int(f[11]) + int(f[12])) * TICK_MS
        ctx = 0
        for t in glob.glob(f"/proc/{pid}/task/*/status"):
            for line in open(t):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    ctx += int(line.split()[1])
        out["ctxsw"] = ctx
    except (OSError, IndexError, ValueError):
        pass
    return out


# name -> (VMM, vhost)
CONFIGS = {
    "cocoon_vhost": ("cocoon", "on"),
    "qemu_microvm_vhost": ("qemu", "on"),
    "cocoon_userspace": ("cocoon", "off"),
    "qemu_microvm": ("qemu", "off"),
}


def run_one(args, ns, name, port):
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                               "--serve", str(port), str(args.mib)],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("sender did not start")
        vmm, vhost = CONFIGS[name]
        cmd = (cocoon_cmd if vmm == "cocoon" else qemu_cmd)(args, port, vhost)
        vm = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + args.timeout
        out = b""
        gbits = None
        before = {}
        try:
            for line in vm.stdout:
                out += line
                text = line.decode(errors="replace")
                if "cocoon-test: net-up" in text:
                    before = vm_stats(vm.pid)
                if "cocoon-test: tcp-sink" in text:
                    after = vm_stats(vm.pid)
                    cost = " ".join(f"{k}={(after[k] - before[k]) / args.mib:.1f}"
                                    for k in after if k in before)
                    print(f"bench: per MiB {name}: {cost}", file=sys.stderr, flush=True)
                    if "error=" in text:
                        raise RuntimeError(f"{name}: {text.strip()}")
                    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
                    gbits = float(fields["gbits"])
                    break
                if time.monotonic() > deadline:
                    break
        finally:
            vm.kill()
            vm.wait()
        if gbits is None:
            raise RuntimeError(f"{name}: no tcp-sink result\n{out.decode(errors='replace')[-3000:]}")
        return gbits
    finally:
        server.kill()
        server.wait()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True, help="the test initramfs (make test-initramfs)")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=512, help="MiB sent per run")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    args.kernel = os.path.realpath(args.kernel)
    args.vmm = os.path.realpath(args.vmm)
    args.initrd = os.path.realpath(args.initrd)

    subprocess.run(["modprobe", "tun"], check=False, stderr=subprocess.DEVNULL)
    subprocess.run(["modprobe", "vhost_net"], check=False, stderr=subprocess.DEVNULL)
    if not os.path.exists("/dev/vhost-net"):
        sys.exit("bench/net.py: /dev/vhost-net is missing (modprobe vhost_net failed)")
    if not os.path.isdir("/sys/kernel/debug/kvm"):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"],
                       check=False, stderr=subprocess.DEVNULL)
    ns = f"cocoon-bench-{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        sh("ip", "-n", ns, "addr", "add", f"{HOST_IP}/24", "dev", TAP)
        sh("ip", "-n", ns, "link", "set", TAP, "up")
        results = {name: [] for name in CONFIGS}
        # Interleave them so drift on a shared machine hits all alike.
        for i in range(args.runs):
            for j, name in enumerate(results):
                g = run_one(args, ns, name, PORT + i * len(CONFIGS) + j)
                results[name].append(g)
                print(f"bench: run {i + 1}/{args.runs} {name} net_tcp_gbits={g:.3f}", file=sys.stderr, flush=True)
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", TAP], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    m = {name: statistics.median(r) for name, r in results.items()}
    for metric, c, q in [("net_tcp_gbits", "cocoon_vhost", "qemu_microvm"),
                         ("net_tcp_gbits_vhost", "cocoon_vhost", "qemu_microvm_vhost"),
                         ("net_tcp_gbits_userspace", "cocoon_userspace", "qemu_microvm")]:
        print(f"bench: {metric} cocoon={m[c]:.3f} qemu_microvm={m[q]:.3f} ratio={m[c] / m[q]:.2f}")


if __name__ == "__main__":
    main()
