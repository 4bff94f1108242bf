#!/usr/bin/env bash
# tests/api/schemathesis.sh TARGET_DIR BUILD_DIR: schemathesis (pinned, from
# PyPI) against a real cocoond and the OpenAPI document it serves.
#
# On the host: installs schemathesis into a virtualenv cached under
# /var/cache/cocoon (keyed by its version and Python's), then runs itself
# through tests/machine/run, where sandboxes boot. There: starts cocoond on a
# private state directory with small size limits (a 1-vCPU, 3 GiB test
# machine cannot hold the 64-vCPU, 64 GiB guests the schema allows), on TCP
# with a bearer token (schemathesis speaks HTTP over TCP), imports the
# built-in busybox image, runs schemathesis with tests/api/schemathesis.toml,
# and exits with its status. Whatever happens, every sandbox is deleted and
# the daemon stopped; sandboxes or VMMs still there afterwards fail the run.
set -euo pipefail
VERSION=4.32.5
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${1:-}" != --in-machine ]; then
  target=$(cd "${1:?usage: tests/api/schemathesis.sh TARGET_DIR BUILD_DIR}" && pwd)
  build=$(cd "${2:?usage: tests/api/schemathesis.sh TARGET_DIR BUILD_DIR}" && pwd)
  py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv=${COCOON_SCHEMATHESIS_VENV:-/var/cache/cocoon/schemathesis/$VERSION-py$py}
  if [ ! -f "$venv/.installed" ]; then
    echo "schemathesis: installing schemathesis==$VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "schemathesis==$VERSION"
    touch "$venv/.installed"
  fi
  "$venv/bin/schemathesis" --version
  exec "$repo/tests/machine/run" -- bash "$here/schemathesis.sh" --in-machine "$target" "$build" "$venv"
fi

target=$2 build=$3 venv=$4
work=$(mktemp -d /tmp/cocoon-schemathesis.XXXXXX)
sock="$work/cocoond.sock"
addr=127.0.0.1:8710
base="http://$addr"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
token=$(cat "$work/token")
api() { curl -sS --max-time 120 -H "Authorization: Bearer $token" "$@"; }

"$target/release/cocoond" --socket "$sock" --state-dir "$work/state" \
  --listen "$addr" --token-file "$work/token" \
  --vmm "$target/release/cocoon-vmm" --kernel "$build/vmlinux" --initrd "$build/initramfs.img" \
  --max-vcpus 1 --max-memory-mib 256 --max-disk-mib 1024 --stop-timeout 5 \
  > "$work/cocoond.log" 2>&1 &
daemon=$!

# The sandboxes' VMM processes: by their command line, which names the
# private state directory.
vmms() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -qF -- "$work/state/" && echo "${p#/proc/}"
  done
  return 0
}

cleanup() {
  local rc=$? left ids id pids
  trap - EXIT
  if kill -0 "$daemon" 2>/dev/null; then
    ids=$(api "$base/v1/sandboxes" | jq -r '.[].id' 2>/dev/null || true)
    for id in $ids; do
      api -o /dev/null -X DELETE "$base/v1/sandboxes/$id" || true
    done
    left=$(api "$base/v1/sandboxes" | jq 'length' 2>/dev/null || echo "?")
    echo "schemathesis: deleted $(echo "$ids" | grep -c . || true) sandboxes; $left left"
    [ "$left" = 0 ] || { echo "schemathesis: sandboxes left after cleanup" >&2; rc=1; }
    kill "$daemon"
  fi
  wait "$daemon" 2>/dev/null || true
  pids=$(vmms)
  if [ -n "$pids" ]; then
    echo "schemathesis: VMM processes left: $pids (killed)" >&2
    kill -9 $pids 2>/dev/null || true
    rc=1
  fi
  if [ "$rc" != 0 ]; then
    echo "schemathesis: cocoond's errors and warnings:" >&2
    grep -E ' (ERROR|WARN) ' "$work/cocoond.log" | tail -n 60 >&2 || true
    echo "schemathesis: the end of cocoond's log:" >&2
    tail -n 80 "$work/cocoond.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  api -o /dev/null "$base/v1/health" 2>/dev/null && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.2
done
api -o /dev/null "$base/v1/health" || { echo "schemathesis: cocoond did not start:" >&2; cat "$work/cocoond.log" >&2; exit 1; }
api -f -o /dev/null -X POST "$base/v1/images" -d '{"builtin":"busybox"}'
# The sandbox exec, logs and file copies are tested in (schemathesis.toml).
COCOON_SANDBOX=$(api -f -X POST "$base/v1/sandboxes" \
  -d '{"image":"busybox","cmd":["sleep","3600"],"labels":{"role":"schemathesis"}}' | jq -r .id)
export COCOON_SANDBOX
COCOON_EXITED=$(api -f -X POST "$base/v1/sandboxes" \
  -d '{"image":"busybox","cmd":["true"],"labels":{"role":"schemathesis"}}' | jq -r .id)
api -f -o /dev/null -X POST "$base/v1/sandboxes/$COCOON_EXITED/wait"
export COCOON_EXITED

cd "$work"
start=$(date +%s)
set +e
timeout -k 10 1500 "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$base/v1/openapi.json" \
  --header "Authorization: Bearer $token" --no-color 2>&1 | cat  # cat: not a terminal, no spinners
rc=${PIPESTATUS[0]}
set -e
echo "schemathesis: exit $rc after $(( $(date +%s) - start )) s"
echo "schemathesis: the sandbox exec and file copies were tested in is $(api "$base/v1/sandboxes/$COCOON_SANDBOX" | jq -r .state)"
exit "$rc"
