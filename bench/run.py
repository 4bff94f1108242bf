#!/usr/bin/env python3
"""End-to-end sandbox benchmarks through cocoond and the cocoon CLI, against
runc in the same machine and environment (the test machine when the host has
no VMX/SVM). Prints:
  bench: run_true_ms cocoon=<median> runc=<median> ratio=<x/y>
  bench: sandboxes_per_s cocoon=<x>
run_true_ms: `cocoon run --rm busybox -- true`, CLI start to exit, daemon
running and image cached, against `runc run` of a busybox root with `true`
(bundle made once), medians of N (default 20).
sandboxes_per_s: N_CONCURRENT (default 50) `cocoon run -d` at once, from the
first start to the last sandbox running; all are deleted afterwards.
Needs root, runc and /bin/busybox."""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True, help="directory with cocoond, cocoon, cocoon-vmm")
ap.add_argument("--kernel", required=True)
ap.add_argument("--initrd", required=True)
ap.add_argument("-n", type=int, default=int(os.environ.get("RUN_BENCH_N", 20)))
ap.add_argument("--concurrent", type=int, default=int(os.environ.get("RUN_BENCH_CONCURRENT", 50)))
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="cocoon-run-bench.", dir="/var/tmp")
sock = os.path.join(work, "d.sock")
cli = [os.path.join(args.bin, "cocoon"), "--socket", sock]


def cocoon(*a, check=True):
    r = subprocess.run(cli + list(a), capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"cocoon {' '.join(a)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def runc_side(n):
    root = os.path.join(work, "runc")
    bundle = os.path.join(root, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "true"))
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg_path = os.path.join(bundle, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["process"]["args"] = ["true"]
    cfg["process"]["terminal"] = False
    json.dump(cfg, open(cfg_path, "w"))
    runc = ["runc", "--root", os.path.join(root, "state")]
    times = []
    for i in range(n + 2):
        t = time.perf_counter()
        subprocess.run(runc + ["run", "--bundle", bundle, f"bench-{i}"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if i >= 2:  # warm-up
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


daemon = None
try:
    log = open(os.path.join(work, "cocoond.log"), "w")
    daemon = subprocess.Popen(
        [os.path.join(args.bin, "cocoond"), "--socket", sock, "--state-dir", os.path.join(work, "state"),
         "--vmm", os.path.join(args.bin, "cocoon-vmm"), "--kernel", args.kernel, "--initrd", args.initrd,
         "--boot-timeout", "300"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while subprocess.run(cli + ["ps"], capture_output=True).returncode != 0:
        if time.time() > deadline or daemon.poll() is not None:
            sys.exit("cocoond did not start: " + open(os.path.join(work, "cocoond.log")).read())
        time.sleep(0.1)
    cocoon("import", "--builtin", "busybox")
    cocoon("run", "--rm", "busybox", "--", "true")  # builds the root disk once
    times = []
    for _ in range(args.n):
        t = time.perf_counter()
        cocoon("run", "--rm", "busybox", "--", "true")
        times.append((time.perf_counter() - t) * 1000)
    c = statistics.median(times)
    r = runc_side(args.n)
    print(f"bench: run_true_ms cocoon={c:.1f} runc={r:.1f} ratio={c / r:.2f}", flush=True)

    def start(_):
        return cocoon("run", "-d", "--memory", "128m", "busybox", "--", "sleep", "100000").strip()

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
        ids = list(pool.map(start, range(args.concurrent)))
    wall = time.perf_counter() - t
    print(f"bench: sandboxes_per_s cocoon={len(ids) / wall:.2f} n={len(ids)} wall_s={wall:.1f}", flush=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: cocoon("rm", "-f", i), ids))
finally:
    if daemon is not None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
    # Any VMM left behind by a failed run.
    subprocess.run(["pkill", "-9", "-f", os.path.join(work, "state")], stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)
