#!/usr/bin/env bash
# scripts/demo.sh TARGET_DIR BUILD_DIR: a real sandbox end to end. Starts
# cocoond on a private socket and state directory, imports the built-in
# busybox image, runs a command in a micro-VM with `cocoon run --rm`, and
# stops the daemon, leaving nothing behind. `make demo` runs it through
# tests/machine/run (in the test machine when this host has no VMX/SVM).
set -euo pipefail
target=$(cd "${1:?usage: scripts/demo.sh TARGET_DIR BUILD_DIR}" && pwd)
build=$(cd "${2:?usage: scripts/demo.sh TARGET_DIR BUILD_DIR}" && pwd)
work=$(mktemp -d /tmp/cocoon-demo.XXXXXX)
sock="$work/cocoond.sock"
cocoon() { "$target/release/cocoon" --socket "$sock" "$@"; }
"$target/release/cocoond" --socket "$sock" --state-dir "$work/state" \
  --vmm "$target/release/cocoon-vmm" --kernel "$build/vmlinux" --initrd "$build/initramfs.img" \
  > "$work/cocoond.log" 2>&1 &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "demo: cocoond did not start:" >&2; cat "$work/cocoond.log" >&2; exit 1; }
set -x
cocoon import --builtin busybox
cocoon images
time cocoon run --rm busybox -- sh -c 'echo hello from a micro-VM; uname -r'
cocoon ps
