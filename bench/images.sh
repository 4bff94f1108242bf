#!/usr/bin/env bash
# Image benchmark: a ~100 MiB three-layer image (python3.11, perl modules,
# perl's own libraries from this host, one gzip layer each) imported into a
# cold store and turned into an erofs root disk, then requested again.
# Prints `bench: image_to_disk_s cocoon=<s>` and
# `bench: image_to_disk_cached_ms cocoon=<ms>`. Needs no KVM.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p cocoon-runtime --example image_to_disk
ex=${CARGO_TARGET_DIR:-target}/release/examples/image_to_disk
work=$(mktemp -d /var/tmp/cocoon-bench-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$ex" make-layout "$work/layout" /usr/lib/python3.11 /usr/share/perl /usr/lib/x86_64-linux-gnu/perl >&2
"$ex" to-disk "$work/state" erofs "$work/layout"
