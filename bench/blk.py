#!/usr/bin/env python3
"""Block benchmark: cocoon-vmm's virtio-blk against QEMU's microvm machine
with virtio-blk-device, on the same raw image file, kernel, test initramfs
(tests/guest), 1 vCPU and 256 MiB. Each run boots one VM whose guest, timing
itself (CLOCK_MONOTONIC), does in order:

- `blkbench:vda:seqread:MIB`   1 MiB O_DIRECT reads, one at a time;
- `blkbench:vda:seqwrite:MIB`  1 MiB O_DIRECT writes, then fdatasync;
- `blkbench:vda:randread:SECS:16`  4 KiB O_DIRECT reads at random offsets
  over the whole disk from 16 threads (queue depth 16).

Runs alternate cocoon, qemu, cocoon, ... and the medians are printed:

    bench: blk_seq_read_mibs cocoon=<x> qemu_microvm=<y> ratio=<x/y>
    bench: blk_seq_write_mibs ...
    bench: blk_rand_read_kiops ...

Host-side caching is the same for both: cocoon-vmm opens the image without
O_DIRECT and does synchronous reads and writes through the host page cache,
offering FLUSH (a volatile write cache the guest flushes with fdatasync).
QEMU gets `cache=writeback,aio=threads`: the page cache too (no O_DIRECT),
write cache on, flush = fdatasync, I/O in its thread pool. (`cache=none`
would add host O_DIRECT, which cocoon-vmm does not do, and which the test
machine's tmpfs-backed /tmp does not support on its 6.1 kernel.) The image
is written in full first, so neither reads holes.

Runs where KVM can boot Linux (tests/machine/run puts it there)."""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmbench  # noqa: E402


def make_image(path, mib):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def run_one(args, name, image):
    steps = ",".join([f"blkbench:vda:seqread:{args.mib}",
                      f"blkbench:vda:seqwrite:{args.mib}",
                      f"blkbench:vda:randread:{args.rand_secs}:{args.qd}"])
    if name == "cocoon":
        cmd = vmbench.cocoon_cmd(args, steps, ["--disk", image])
    else:
        cmd = vmbench.qemu_cmd(args, steps, [
            "-drive", f"id=d0,file={image},format=raw,if=none,cache=writeback,aio=threads",
            "-device", "virtio-blk-device,drive=d0"])
    g = vmbench.Guest(name, cmd, args.timeout)
    try:
        r = vmbench.fields(g.wait_for("blkbench vda seqread"))
        w = vmbench.fields(g.wait_for("blkbench vda seqwrite"))
        q = vmbench.fields(g.wait_for("blkbench vda randread"))
        g.wait_for("done")
    finally:
        g.close()
    return float(r["mibs"]), float(w["mibs"]), float(q["kiops"])


def main():
    ap = argparse.ArgumentParser()
    vmbench.add_common_args(ap)
    ap.add_argument("--mib", type=int, default=256, help="image size and MiB read/written per run")
    ap.add_argument("--rand-secs", type=int, default=10)
    ap.add_argument("--qd", type=int, default=16)
    args = ap.parse_args()
    vmbench.resolve_paths(args)

    tmp = tempfile.mkdtemp(prefix="cocoon-blk-bench.")
    try:
        image = os.path.join(tmp, "disk.raw")
        make_image(image, args.mib)
        metrics = ("blk_seq_read_mibs", "blk_seq_write_mibs", "blk_rand_read_kiops")
        results = {m: {"cocoon": [], "qemu_microvm": []} for m in metrics}
        # Interleave the two so drift on a shared machine hits both alike.
        for i in range(args.runs):
            for name in ("cocoon", "qemu_microvm"):
                values = run_one(args, name, image)
                for m, v in zip(metrics, values):
                    results[m][name].append(v)
                vmbench.progress(f"run {i + 1}/{args.runs} {name} seq_read_mibs={values[0]:.1f} "
                                 f"seq_write_mibs={values[1]:.1f} rand_read_kiops={values[2]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    vmbench.report("blk_seq_read_mibs", results["blk_seq_read_mibs"])
    vmbench.report("blk_seq_write_mibs", results["blk_seq_write_mibs"])
    vmbench.report("blk_rand_read_kiops", results["blk_rand_read_kiops"], "{:.2f}")


if __name__ == "__main__":
    main()
