#!/usr/bin/env python3
"""The runc side of the exec benchmark: `runc exec CTR true` N times into a
running busybox container (Debian's busybox-static), in the same machine
and environment as Cocoon's side. Prints one JSON line:
{"p50_ms": ..., "p99_ms": ..., "n": ...}.
Needs root, runc and /bin/busybox."""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
name = f"cocoon-bench-{os.getpid()}"
work = tempfile.mkdtemp(prefix="cocoon-runc-bench.", dir="/var/tmp")
state = os.path.join(work, "state")
runc = ["runc", "--root", state]
try:
    rootfs = os.path.join(work, "bundle", "rootfs")
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"]:
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
    bundle = os.path.join(work, "bundle")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg_path = os.path.join(bundle, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["process"]["args"] = ["sleep", "100000"]
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    json.dump(cfg, open(cfg_path, "w"))
    # Detached: the container's init keeps whatever stdio it is given, so
    # hand it /dev/null rather than pipes nobody would close.
    subprocess.run(runc + ["run", "-d", "--bundle", bundle, name], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for i in range(n + 5):
        t = time.perf_counter()
        subprocess.run(runc + ["exec", name, "true"], check=True)
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))], "n": n}))
finally:
    subprocess.run(runc + ["delete", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)
