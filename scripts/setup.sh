#!/usr/bin/env bash
# Set-up for a fresh Debian machine with Node 20: installs the Debian packages dpms needs when they
# are missing, installs the npm dependencies, and builds the native addon and the TypeScript.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Libraries the addon links (libpmem, OpenSSL's libcrypto, rdma-core, libfuse3 for pDFS's mount), and the
# build tools node-gyp uses; fio, bindfs (the FUSE peer) and attr for pDFS's benchmark and tests.
# qemu, busybox, cpio, kmod and the rdma-core providers run the soft-RoCE VM in which the verbs
# provider is tested (scripts/rxe-vm.sh). redis-server and redis-tools are the peer
# and the real client of the RESP gateway (tests and `dpms bench kv`).
packages=(
  build-essential python3 pkg-config
  libpmem-dev libssl-dev libibverbs-dev librdmacm-dev ibverbs-utils rdmacm-utils ibverbs-providers rdma-core
  libfuse3-dev fuse3 fio bindfs attr
  qemu-system-x86 busybox-static cpio kmod iproute2
  redis-server redis-tools
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci when the lock file is present and node_modules is stale; it also runs the addon build.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
