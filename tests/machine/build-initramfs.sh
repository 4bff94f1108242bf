#!/usr/bin/env bash
# Builds (once, cached) the initramfs of the test machine: busybox, the
# modules Debian's stock kernel needs for 9p over virtio-pci and for
# kvm_amd, and init.sh (which has the kernel load any other module from the
# host's /lib/modules on demand). Prints "KERNEL INITRAMFS" on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${COCOON_CACHE:-/var/cache/cocoon}

kernel=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "test-machine: no /boot/vmlinuz-*-amd64; run scripts/deps.sh (package linux-image-amd64)" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
[ -x /bin/busybox ] || { echo "test-machine: /bin/busybox missing; run scripts/deps.sh (package busybox-static)" >&2; exit 1; }

key=$( { cat "$here/init.sh" "$here/build-initramfs.sh"; echo "$kver"; sha256sum /bin/busybox; } | sha256sum | cut -c1-16)
out="$cache/machine/$key"
if [ ! -f "$out/initramfs.img" ]; then
  mkdir -p "$cache/machine"
  stage=$(mktemp -d "$cache/machine/stage.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/bin" "$stage/modules"
  cp /bin/busybox "$stage/bin/busybox"
  cp "$here/init.sh" "$stage/init"
  chmod 755 "$stage/init"
  # Modules in dependency order, each once.
  modprobe --show-depends -S "$kver" -a virtio_pci 9pnet_virtio 9p overlay kvm_amd \
    | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > "$stage/modules.list"
  : > "$stage/modules/order"
  while read -r ko; do
    cp "$ko" "$stage/modules/"
    basename "$ko" >> "$stage/modules/order"
  done < "$stage/modules.list"
  rm "$stage/modules.list"
  mkdir -p "$out.tmp"
  (cd "$stage" && find . | cpio -o -H newc --quiet > "$out.tmp/initramfs.img")
  rm -rf "$out"
  mv "$out.tmp" "$out"
fi
echo "$kernel $out/initramfs.img"
