#!/usr/bin/env python3
"""End-to-end sandbox benchmarks through cocoond and the cocoon CLI, against
runc in the same machine and environment (the test machine when the host has
no VMX/SVM). Prints:
  bench: run_true_ms cocoon=<median> runc=<median> ratio=<x/y>
  bench: sandboxes_per_s cocoon=<x>
  bench: run_true_warm_ms cocoon=<median> runc=<median> ratio=<x/y>
  bench: warm_vm_rss_mib cocoon=<x>
run_true_ms: `cocoon run --rm busybox -- true`, CLI start to exit, daemon
running and image cached, against `runc run` of a busybox root with `true`
(bundle made once), medians of N (default 20).
sandboxes_per_s: N_CONCURRENT (default 50) `cocoon run -d` at once, from the
first start to the last sandbox running; all are deleted afterwards.
run_true_warm_ms: the same `run --rm ... true` against a cocoond with
`--warm-pool 1`, each run started once the pool holds its booted VM again
(so it measures a create that finds a warm VM, not the pool's refill rate);
warm_vm_rss_mib: the resident memory of that idle warm VM's VMM process.
Needs root, runc and /bin/busybox."""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
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


def start_daemon(*extra):
    log = open(os.path.join(work, "cocoond.log"), "a")
    d = subprocess.Popen(
        [os.path.join(args.bin, "cocoond"), "--socket", sock, "--state-dir", os.path.join(work, "state"),
         "--vmm", os.path.join(args.bin, "cocoon-vmm"), "--kernel", args.kernel, "--initrd", args.initrd,
         "--boot-timeout", "300", *extra],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while subprocess.run(cli + ["ps"], capture_output=True).returncode != 0:
        if time.time() > deadline or d.poll() is not None:
            sys.exit("cocoond did not start: " + open(os.path.join(work, "cocoond.log")).read())
        time.sleep(0.1)
    return d


def stop_daemon(d):
    d.send_signal(signal.SIGTERM)
    try:
        d.wait(30)
    except subprocess.TimeoutExpired:
        d.kill()


def metric(name):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock)
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: cocoond\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    sys.exit(f"no metric {name}")


def wait_warm():
    deadline = time.time() + 300
    while metric("cocoon_warm_pool_ready") < 1:
        if time.time() > deadline:
            sys.exit("the warm pool did not fill: " + open(os.path.join(work, "cocoond.log")).read()[-3000:])
        time.sleep(0.05)


def warm_vmm_rss_mib():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if cmd[0].endswith(b"cocoon-vmm") and any(b"/warm/" in a for a in cmd):
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    sys.exit("no warm VMM process found")


daemon = None
try:
    daemon = start_daemon()
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
    stop_daemon(daemon)

    daemon = start_daemon("--warm-pool", "1")
    cocoon("run", "--rm", "busybox", "--", "true")  # a miss: the pool fills after it
    times = []
    for _ in range(args.n):
        wait_warm()
        t = time.perf_counter()
        cocoon("run", "--rm", "busybox", "--", "true")
        times.append((time.perf_counter() - t) * 1000)
    hits = metric("cocoon_warm_pool_hits_total")
    if hits != args.n:
        sys.exit(f"only {hits:.0f} of {args.n} warm runs took a warm VM")
    w = statistics.median(times)
    print(f"bench: run_true_warm_ms cocoon={w:.1f} runc={r:.1f} ratio={w / r:.2f}", flush=True)
    wait_warm()
    time.sleep(2)  # the idle guest settles
    print(f"bench: warm_vm_rss_mib cocoon={warm_vmm_rss_mib():.1f}", flush=True)
finally:
    if daemon is not None:
        stop_daemon(daemon)
    # Any VMM left behind by a failed run.
    subprocess.run(["pkill", "-9", "-f", os.path.join(work, "state")], stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)
