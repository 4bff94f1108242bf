#!/usr/bin/env bash
# bench/exec.sh VMM_TARGET_DIR: exec round trip into a running container,
# Cocoon (the agent in a micro-VM, through AgentClient over vsock) against
# `runc exec` into a running busybox container, both measured in the same
# environment (the test machine when this host has no VMX/SVM), plus the
# stdout throughput of one Cocoon process. Prints:
#   bench: exec_roundtrip_ms cocoon=<p50> runc=<p50> ratio=<x/y> cocoon_p99=<p99> runc_p99=<p99>
#   bench: stdout_mibs cocoon=<MiB/s>
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${EXEC_BENCH_N:-200}
example=${1:?usage: bench/exec.sh PATH_TO_exec_bench}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$root/tests/machine/run" -- bash -c "
  set -e
  echo cocoon \$(COCOON_VMM='${COCOON_VMM:-}' '$example' $n | tail -n 1)
  echo runc \$(python3 '$root/bench/exec_runc.py' $n | tail -n 1)
" | tee "$out" >&2
python3 - "$out" <<'PY'
import json, sys
lines = {l.split(" ", 1)[0]: json.loads(l.split(" ", 1)[1]) for l in open(sys.argv[1]) if l.startswith(("cocoon {", "runc {"))}
c, r = lines["cocoon"], lines["runc"]
print(f"bench: exec_roundtrip_ms cocoon={c['p50_ms']:.2f} runc={r['p50_ms']:.2f} ratio={c['p50_ms'] / r['p50_ms']:.2f} cocoon_p99={c['p99_ms']:.2f} runc_p99={r['p99_ms']:.2f}")
print(f"bench: stdout_mibs cocoon={c['stdout_mibs']:.1f}")
PY
