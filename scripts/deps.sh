#!/usr/bin/env bash
# Installs the Debian packages Cocoon's build, demo, tests and benchmarks use,
# skipping those already installed. Safe to run repeatedly.
set -euo pipefail
pkgs=(
  # guest kernel build
  linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils
  # initramfs images
  cpio
  # the test machine (L1 VM) and the benchmark peer
  qemu-system-x86 linux-image-amd64 busybox-static kmod
  # the exec benchmark peer
  runc
  # image store: root disks (erofs, ext4 scratch)
  erofs-utils e2fsprogs
  # registry pull tests: a local registry, pushing to it, TLS and basic-auth set-up
  docker-registry skopeo openssl apache2-utils
  # sandbox networking (network: default): ip, tc, nft
  iproute2 nftables
  # scripts
  jq python3 curl
  # tests/api/schemathesis.sh: a virtualenv for schemathesis (from PyPI)
  python3-venv
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -print -quit 2>/dev/null)" ]; then
  apt-get update -q >&2
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
