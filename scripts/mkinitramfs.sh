#!/usr/bin/env bash
# mkinitramfs.sh AGENT OUT: writes an uncompressed newc cpio whose only
# file is AGENT as /init. Uncompressed because the guest kernel carries no
# decompressors and copying is cheaper than inflating under emulation.
set -euo pipefail
agent=$1
out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$agent" "$stage/init"
mkdir -p "$(dirname "$out")"
(cd "$stage" && echo init | cpio -o -H newc -R 0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
