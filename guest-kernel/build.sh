#!/usr/bin/env bash
# Builds Cocoon's guest kernel (an uncompressed ELF vmlinux with a PVH note)
# from Debian's linux-source-6.1 and cocoon.config, and caches it outside the
# repository, keyed by the hash of the config, the recipe version below, the
# source package version and the compiler. Prints the path of the cached vmlinux on
# stdout (everything else goes to stderr).
#
# Environment: COCOON_CACHE (default /var/cache/cocoon), JOBS (default nproc).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${COCOON_CACHE:-/var/cache/cocoon}
jobs=${JOBS:-$(nproc)}
log() { echo "guest-kernel: $*" >&2; }

pkgs=(linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -print -quit 2>/dev/null)" ] || apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
tarball=$(ls /usr/src/linux-source-6.1.tar.xz)
# Bump when the way the kernel is built changes (not for comment edits).
recipe=1
key=$( { cat "$here/cocoon.config"; echo "$src_version recipe=$recipe"; gcc --version | head -1; } | sha256sum | cut -c1-16)
out="$cache/kernel/$key"

if [ -f "$out/vmlinux" ]; then
  echo "$out/vmlinux"
  exit 0
fi

mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9
if [ -f "$out/vmlinux" ]; then   # built by someone else while we waited
  echo "$out/vmlinux"
  exit 0
fi

work="$cache/kernel/build-$key"
rm -rf "$work" "$cache"/kernel/build-*
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
log "building linux-source-6.1 $src_version with cocoon.config (key $key) in $work"
start=$(date +%s)
tar -C "$work" -xf "$tarball"
tree="$work/linux-source-6.1"
# The fragment carries a reason beside every option; Kconfig wants bare lines.
sed -e 's/[[:space:]]*#.*$//' -e '/^$/d' "$here/cocoon.config" > "$work/fragment.config"
make -C "$tree" -s allnoconfig KCONFIG_ALLCONFIG="$work/fragment.config" >&2

# Every option we asked for must have survived dependency resolution.
bad=0
while IFS= read -r line; do
  name=${line%%=*}
  want=${line#*=}
  if [ "$want" = n ]; then
    if grep -q "^$name=" "$tree/.config"; then log "wanted $name off, got $(grep "^$name=" "$tree/.config")"; bad=1; fi
  else
    got=$(grep "^$name=" "$tree/.config" || true)
    if [ "$got" != "$name=$want" ]; then log "wanted $name=$want, got '${got:-unset}'"; bad=1; fi
  fi
done < "$work/fragment.config"
[ $bad = 0 ] || { log "config check failed"; exit 1; }

make -C "$tree" -s -j"$jobs" vmlinux >&2
notes=$(readelf -n "$tree/vmlinux")
grep -qi 'xen.*0x00000012' <<<"$notes" || { log "vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note"; exit 1; }

mkdir -p "$out.tmp"
cp "$tree/vmlinux" "$out.tmp/vmlinux"
cp "$tree/.config" "$out.tmp/config"
echo "$src_version" > "$out.tmp/source-version"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$work"
log "built in $(( $(date +%s) - start ))s"
echo "$out/vmlinux"
