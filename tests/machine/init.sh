#!/bin/busybox sh
# PID 1 of the test machine (L1 VM). Mounts the host's root read-only over
# 9p, loads kvm_amd, runs the command the host wrote into the scratch share
# inside a chroot of the host's root, and records its exit status.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "test-machine: insmod $m failed" > /dev/ttyS0; done
# Modules the kernel asks for on demand (veth, tun, nf_tables and its
# expressions, tc's u32 and mirred, ...) come from the host's /lib/modules
# through the chroot, as on a real host: the kernel's modprobe helper runs
# in this initramfs, which has no modules tree of its own.
printf '#!/bin/busybox sh\nexec /bin/busybox chroot /host /sbin/modprobe "$@"\n' > /bin/host-modprobe
chmod 755 /bin/host-modprobe
echo /bin/host-modprobe > /proc/sys/kernel/modprobe
scratch=$(sed -n 's/.*cocoon.scratch=\([^ ]*\).*/\1/p' /proc/cmdline)
# The host's root, read-only over 9p, under a tmpfs overlay: every host path
# is visible (wherever the repository was cloned), and writes land in the
# L1's RAM, never on the host.
mkdir -p /lower /rw
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /lower
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
if ! mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /host; then
  echo "test-machine: overlay over 9p failed; host root is read-only, /tmp is empty" > /dev/ttyS0
  mount --bind /lower /host
  mount -t tmpfs -o mode=1777 tmpfs /host/tmp
fi
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t tmpfs tmpfs /host/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 scratch "/host$scratch"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup 2>/dev/null
ip link set lo up
# Debian's default: huge pages only where asked for (as cocoon-vmm and QEMU do for guest RAM).
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
stty -F /dev/ttyS1 raw -echo
if [ -c /dev/kvm ]; then kvm=yes; else kvm=no; fi
echo "test-machine: L1 up, /dev/kvm=$kvm" > /dev/ttyS0
# Heartbeat for post-mortems: when the host's timeout ends this VM, the tail
# of its console shows what was running and which tasks were blocked where.
echo 120 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
(
  while sleep 60; do
    {
      echo "test-machine: heartbeat uptime=$(cut -d' ' -f1 /proc/uptime)s load=$(cut -d' ' -f1-3 /proc/loadavg)"
      for d in /proc/[0-9]*; do
        st=$(awk '/^State:/ { print $2 }' "$d/status" 2>/dev/null)
        case "$st" in D|R) echo "  pid ${d#/proc/} $(cat "$d/comm" 2>/dev/null) state $st wchan $(cat "$d/wchan" 2>/dev/null)";; esac
      done
    } > /dev/ttyS0
  done
) &
chroot /host /bin/bash "$scratch/cmd.sh" < /dev/null > /dev/ttyS1 2>&1
echo $? > "/host$scratch/status"
sync
poweroff -f
