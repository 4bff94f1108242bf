#!/usr/bin/env python3
"""vsock benchmark: stream throughput through cocoon-vmm's virtio-vsock
device and its hybrid Unix socket (`--vsock PATH`), both directions, with
the test initramfs (tests/guest), 1 vCPU, 256 MiB. There is no QEMU peer:
QEMU's vsock is vhost-vsock only, a kernel device, not a userspace one.

Each run boots one VM whose guest does
- `vsock-sink:PORT`: accepts the host's `CONNECT PORT` and reads to EOF
  while the host sends MIB MiB (host -> guest);
- `vsock-source:PORT2:MIB`: connects to the host (`PATH_PORT2`, where this
  script listens and reads to EOF) and sends MIB MiB (guest -> host);
each timed inside the guest (CLOCK_MONOTONIC). Prints the medians:

    bench: vsock_mibs cocoon=<host->guest>
    bench: vsock_guest_to_host_mibs cocoon=<guest->host>

Runs where KVM can boot Linux (tests/machine/run puts it there)."""

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmbench  # noqa: E402

SINK_PORT = 5200
SOURCE_PORT = 5201


def drain(listener, result):
    """Accepts one guest connection, reads it to EOF, closes it."""
    try:
        c, _ = listener.accept()
        n = 0
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
        c.close()
        result.append(n)
    except OSError as e:
        result.append(e)


def send_to_guest(path, port, mib):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(f"CONNECT {port}\n".encode())
    reply = b""
    while not reply.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise RuntimeError("vsock: the device closed the connection instead of OK")
        reply += b
    if not reply.startswith(b"OK "):
        raise RuntimeError(f"vsock: unexpected reply {reply!r}")
    buf = b"\xa5" * (1 << 20)
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    return s


def run_one(args, tmp, i):
    path = os.path.join(tmp, f"v{i}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{path}_{SOURCE_PORT}")
    listener.listen(1)
    received = []
    t = threading.Thread(target=drain, args=(listener, received), daemon=True)
    t.start()
    steps = f"vsock-sink:{SINK_PORT},vsock-source:{SOURCE_PORT}:{args.mib}"
    g = vmbench.Guest("cocoon", vmbench.cocoon_cmd(args, steps, ["--vsock", path]), args.timeout)
    try:
        g.wait_for(f"vsock-listening port={SINK_PORT}")
        s = send_to_guest(path, SINK_PORT, args.mib)
        sink = vmbench.fields(g.wait_for("vsock-sink"))
        s.close()
        source = vmbench.fields(g.wait_for("vsock-source"))
        g.wait_for("done")
    finally:
        g.close()
        listener.close()
    t.join(timeout=10)
    want = args.mib << 20
    if int(sink["bytes"]) != want or received != [want]:
        raise RuntimeError(f"vsock: byte counts differ: guest got {sink['bytes']}, host got {received}, "
                           f"sent {want} each way")
    return float(sink["mibs"]), float(source["mibs"])


def main():
    ap = argparse.ArgumentParser()
    vmbench.add_common_args(ap)
    ap.add_argument("--mib", type=int, default=256, help="MiB sent each way per run")
    args = ap.parse_args()
    vmbench.resolve_paths(args)

    tmp = tempfile.mkdtemp(prefix="cocoon-vsock-bench.")
    h2g, g2h = [], []
    try:
        for i in range(args.runs):
            a, b = run_one(args, tmp, i)
            h2g.append(a)
            g2h.append(b)
            vmbench.progress(f"run {i + 1}/{args.runs} cocoon vsock_host_to_guest_mibs={a:.1f} "
                             f"vsock_guest_to_host_mibs={b:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    vmbench.report("vsock_mibs", {"cocoon": h2g})
    vmbench.report("vsock_guest_to_host_mibs", {"cocoon": g2h})


if __name__ == "__main__":
    main()
