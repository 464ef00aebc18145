#!/usr/bin/env bash
# rxe-vm.sh: run one command inside a small qemu VM that has a real RDMA device (soft-RoCE, rdma_rxe),
# so that the 'verbs' transport provider (native/src/verbs_*.cc) can be tested on machines whose own
# kernel has no RDMA support. npm test runs the verbs suite through it (test/transport/verbs-vm.test.ts).
#
#   scripts/rxe-vm.sh [--mem MiB] [--timeout S] [--out DIR] -- COMMAND [ARGS...]
#
# How it works: Debian's own kernel package (linux-image-amd64, which ships rdma_rxe and rdma_ucm as
# modules) is downloaded once with apt and cached with the few modules the guest needs. Each run builds
# a tiny initramfs (busybox-static + those modules + an init script), boots the kernel under qemu's
# software CPU emulation, mounts the host's root file system read-only over 9p (so node, the npm
# packages and the built addon are all there), mounts fresh tmpfs on /tmp, /run, /root and /dev/shm,
# creates a veth pair with 10.200.0.1 on one end and the soft-RoCE device rxe0 on it, and runs COMMAND
# as root in the current directory (which must not be under /tmp: the guest's /tmp is a new tmpfs).
#   - rxe0, port 1, RoCEv2 GID index 1 for 10.200.0.1 (env RXE_VM_DEVICE, RXE_VM_ADDR). rdma_rxe loops
#     back packets addressed to its own GID, so processes of the guest connect to each other through it
#     with real verbs semantics; librdmacm works (rdma_ucm is loaded) and resolves 10.200.0.1 to rxe0.
#   - --out DIR (on the host; created if missing) is mounted read-write at the same path in the guest.
#   - The exit status is COMMAND's; 125 when the guest never got to run it (boot failure, timeout).
# Missing Debian packages (qemu-system-x86, busybox-static, cpio, kmod, rdma-core, ibverbs-providers,
# iproute2) are installed on first use; the kernel is cached under ${DPMS_VM_CACHE:-/var/cache/dpms-vm}.
# Boot takes ~5 s after the first run; code in the guest runs several times slower than on the host.
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }

mem=2048
timeout_s=600
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem="${2:?--mem needs MiB}"; shift 2 ;;
    --timeout) timeout_s="${2:?--timeout needs seconds}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "rxe-vm.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "rxe-vm.sh: no command given (see --help)" >&2; exit 2; }
case "$mem$timeout_s" in *[!0-9]*) echo "rxe-vm.sh: --mem and --timeout take whole numbers" >&2; exit 2 ;; esac
case "$(pwd)/" in /tmp/*) echo "rxe-vm.sh: run it from a directory outside /tmp (the guest's /tmp is a fresh tmpfs)" >&2; exit 2 ;; esac

cache="${DPMS_VM_CACHE:-/var/cache/dpms-vm}"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"

# ---- Host packages ----
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -x /bin/busybox ] && dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v depmod >/dev/null || missing+=(kmod)
command -v rdma >/dev/null || missing+=(iproute2)
ls /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so >/dev/null 2>&1 || missing+=(ibverbs-providers)
dpkg -s rdma-core >/dev/null 2>&1 || missing+=(rdma-core)
if [ ${#missing[@]} -gt 0 ]; then
  echo "rxe-vm.sh: installing ${missing[*]}" >&2
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing[*]}" >/dev/null
fi

# ---- Kernel and modules (cached) ----
# Modules the guest loads, dependencies first: 9p over virtio for the host's file system, veth for the
# link rxe0 sits on, rdma_rxe for the device and rdma_ucm for librdmacm (/dev/infiniband/rdma_cm).
wanted_modules="crc32_generic virtio_pci 9pnet_virtio 9p veth rdma_rxe rdma_ucm"
if [ ! -s "$cache/kver" ] || [ ! -s "$cache/vmlinuz" ] || [ ! -s "$cache/modules/order" ] || [ "$(cat "$cache/wanted" 2>/dev/null)" != "$wanted_modules" ]; then
  echo "rxe-vm.sh: preparing a kernel in $cache (once)" >&2
  $sudo_cmd mkdir -p "$cache"
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || $sudo_cmd apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "rxe-vm.sh: cannot find Debian's linux-image-amd64 kernel package" >&2; exit 3; }
  scratch=$(mktemp -d)
  (cd "$scratch" && apt-get download -qq "$pkg" >/dev/null 2>&1) || { echo "rxe-vm.sh: apt-get download $pkg failed" >&2; rm -rf "$scratch"; exit 3; }
  dpkg -x "$scratch"/*.deb "$scratch/root"
  kver=$(ls "$scratch/root/lib/modules" | head -1)
  moddir="$scratch/root/lib/modules/$kver"
  depmod -b "$scratch/root" "$kver"
  # Load order: each module after its dependencies (modules.dep lists them), each once.
  ordered=()
  add_module() {
    local name="$1" path dep
    path=$(awk -F: -v want="/$name.ko" '{ n = length($1) - length(want) + 1; if (n > 0 && substr($1, n) == want) { print $1; exit } }' "$moddir/modules.dep")
    if [ -z "$path" ]; then
      path=$(awk -F: -v want="/$name.ko." '{ if (index($1, want)) { print $1; exit } }' "$moddir/modules.dep")  # compressed .ko.xz/.ko.zst
    fi
    [ -n "$path" ] || { echo "rxe-vm.sh: module $name is not in $pkg" >&2; exit 3; }
    for dep in $(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$moddir/modules.dep"); do
      add_module "$(basename "$dep" | sed 's/\.ko.*$//')"
    done
    local seen
    for seen in "${ordered[@]:-}"; do [ "$seen" = "$path" ] && return 0; done
    ordered+=("$path")
  }
  for m in $wanted_modules; do add_module "$m"; done
  $sudo_cmd rm -rf "$cache/modules"
  $sudo_cmd mkdir -p "$cache/modules"
  : | $sudo_cmd tee "$cache/modules/order" >/dev/null
  for path in "${ordered[@]}"; do
    file=$(basename "$path")
    case "$file" in
      *.ko.xz) xz -dc "$moddir/$path" | $sudo_cmd tee "$cache/modules/${file%.xz}" >/dev/null; file=${file%.xz} ;;
      *.ko.zst) zstd -qdc "$moddir/$path" | $sudo_cmd tee "$cache/modules/${file%.zst}" >/dev/null; file=${file%.zst} ;;
      *) $sudo_cmd cp "$moddir/$path" "$cache/modules/$file" ;;
    esac
    echo "$file" | $sudo_cmd tee -a "$cache/modules/order" >/dev/null
  done
  $sudo_cmd cp "$scratch/root/boot/vmlinuz-$kver" "$cache/vmlinuz"
  echo "$kver" | $sudo_cmd tee "$cache/kver" >/dev/null
  echo "$wanted_modules" | $sudo_cmd tee "$cache/wanted" >/dev/null
  rm -rf "$scratch"
fi

# ---- Initramfs for this run ----
work=$(mktemp -d)
trap '[ -n "${DPMS_VM_KEEP:-}" ] || rm -rf "$work"' EXIT
root="$work/initrd"
mkdir -p "$root/bin" "$root/mods" "$root/proc" "$root/sys" "$root/dev" "$root/mnt"
cp /bin/busybox "$root/bin/busybox"  # static: the initramfs has no libc
cp "$cache"/modules/*.ko "$cache/modules/order" "$root/mods/"

if [ -n "$out" ]; then mkdir -p "$out"; out=$(cd "$out" && pwd); fi

# The command runs from a bash script (arguments quoted with printf %q, which bash reads back exactly).
{
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb NO_COLOR=1 NODE_DISABLE_COLORS=1'
  printf 'export CI=%q RXE_VM_DEVICE=rxe0 RXE_VM_ADDR=10.200.0.1\n' "${CI:-}"
  echo 'bash /tmp/.rxe-vm-setup.sh || { echo "rxe-vm.sh: guest network/RDMA set-up failed" >&2; exit 125; }'
  printf 'cd %q || exit 125\n' "$(pwd)"
  printf 'exec'; printf ' %q' "$@"; echo
} > "$work/run.sh"

# The guest's set-up, run inside the host's root (chroot) before the command.
cat > "$work/setup.sh" <<'SETUP'
set -e
ip link set lo up
ip link add rxeport type veth peer name rxepeer
ip addr add 10.200.0.1/24 dev rxeport
ip link set rxeport up
ip link set rxepeer up
rdma link add rxe0 type rxe netdev rxeport
SETUP

cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for module in \$(cat /mods/order); do insmod /mods/\$module || echo "rxe-vm.sh: insmod \$module failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /mnt || { echo "rxe-vm.sh: cannot mount the host root"; poweroff -f; }
for d in proc sys dev; do mount --bind /\$d /mnt/\$d; done
for d in tmp run root; do mount -t tmpfs guest-\$d /mnt/\$d; done
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs shm /mnt/dev/shm
if [ -n "$out" ]; then mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 outdir "/mnt$out" || echo "rxe-vm.sh: cannot mount --out"; fi
cp /setup.sh /mnt/tmp/.rxe-vm-setup.sh
cp /run.sh /mnt/tmp/.rxe-vm-run.sh
echo DPMS_VM_BOOTED
chroot /mnt /bin/bash /tmp/.rxe-vm-run.sh
echo "DPMS_VM_EXIT=\$?"
poweroff -f
INIT
chmod +x "$root/init"
cp "$work/setup.sh" "$work/run.sh" "$root/"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

# ---- Boot ----
out_share=()
[ -z "$out" ] || out_share=(-virtfs "local,path=$out,mount_tag=outdir,security_model=passthrough")
console="$work/console.log"
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp 2 -nographic -no-reboot -nic none \
  -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 loglevel=3 quiet" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap" \
  "${out_share[@]}" < /dev/null 2>&1 \
  | tr -d '\r' | tee "$console" \
  | sed -u -n '/DPMS_VM_BOOTED/,$p' | grep --line-buffered -v -e 'DPMS_VM_BOOTED' -e '^DPMS_VM_EXIT=' -e 'reboot: Power down' -e '^\[ *[0-9.]*\] '
qemu_status=${PIPESTATUS[0]}
set -e
status=$(sed -n 's/^DPMS_VM_EXIT=\([0-9]*\)$/\1/p' "$console" | tail -1)
if [ -z "$status" ]; then
  grep -q 'DPMS_VM_BOOTED' "$console" || { echo "rxe-vm.sh: the guest did not boot (qemu status $qemu_status); console:" >&2; tail -40 "$console" >&2; }
  [ "$qemu_status" != 124 ] || echo "rxe-vm.sh: timed out after $timeout_s s" >&2
  exit 125
fi
exit "$status"
