#!/usr/bin/env bash
# Provides `bitcoind` and `bitcoin-cli` built from the Bitcoin Core source tree that the
# `libbitcoinkernel-sys` crate ships (the same Core the ledger's script checks come from),
# built once into a cache directory and reused. Prints the path of `bitcoind` on stdout
# (its only output there); `bitcoin-cli` sits beside it. Progress goes to stderr.
#
# Needs: cmake, a C++ compiler, Boost headers and libevent (Debian: cmake build-essential
# libboost-dev libevent-dev). Environment:
#   COHORT_BITCOIND_CACHE  cache directory (default ~/.cache/cohort/bitcoind-<core>-sys<crate>)
#   COHORT_BITCOIN_SRC     a Bitcoin Core source tree to build instead of the crate's
#   COHORT_BUILD_JOBS      parallel compile jobs (default: number of CPUs)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "bitcoind.sh: $*" >&2; }

# The libbitcoinkernel-sys version Cargo.lock pins, so the node matches the ledger's Core.
sys_version=$(awk '/^name = "libbitcoinkernel-sys"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
  "$repo/Cargo.lock")
if [ -z "$sys_version" ]; then
  log "libbitcoinkernel-sys not found in $repo/Cargo.lock"
  exit 1
fi

find_src() {
  local d
  for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"libbitcoinkernel-sys-$sys_version"/bitcoin; do
    [ -f "$d/CMakeLists.txt" ] && { echo "$d"; return 0; }
  done
  return 1
}

src=${COHORT_BITCOIN_SRC:-}
if [ -z "$src" ]; then
  if ! src=$(find_src); then
    log "fetching crate sources (cargo fetch) for libbitcoinkernel-sys $sys_version"
    (cd "$repo" && cargo fetch --locked >&2)
    src=$(find_src) || { log "libbitcoinkernel-sys-$sys_version/bitcoin not in the cargo registry"; exit 1; }
  fi
fi
core_version=$(awk '/set\(CLIENT_VERSION_MAJOR/ { gsub(/\)/, "", $2); ma=$2 }
                    /set\(CLIENT_VERSION_MINOR/ { gsub(/\)/, "", $2); mi=$2 }
                    END { print ma "." mi }' "$src/CMakeLists.txt")
cache=${COHORT_BITCOIND_CACHE:-$HOME/.cache/cohort/bitcoind-$core_version-sys$sys_version}
bin="$cache/bin/bitcoind"

usable() { [ -x "$bin" ] && [ -x "$cache/bin/bitcoin-cli" ] && "$bin" -version >/dev/null 2>&1; }
if usable; then
  echo "$bin"
  exit 0
fi

mkdir -p "$(dirname "$cache")"
# One build at a time per cache directory; a second caller waits and reuses it.
exec 9>"$cache.lock"
flock 9
if usable; then
  echo "$bin"
  exit 0
fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { log "$tool not found (Debian: apt-get install cmake build-essential libboost-dev libevent-dev)"; exit 1; }
done

build="$cache.build"
jobs=${COHORT_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
log "building Bitcoin Core $core_version (libbitcoinkernel-sys $sys_version) from $src into $cache, $jobs jobs"
start=$(date +%s)
# Only the daemon and the CLI: no wallet (tests fund from coinbases with their own keys),
# GUI, ZMQ, IPC, tests, bench, fuzz, tools, USDT, man pages. The crate leaves out the
# ASMap data file, hence WITH_EMBEDDED_ASMAP=OFF.
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON \
  -DBUILD_BITCOIN_BIN=OFF -DBUILD_GUI=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF \
  -DBUILD_WALLET_TOOL=OFF -DBUILD_UTIL_CHAINSTATE=OFF -DBUILD_KERNEL_LIB=OFF \
  -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_FUZZ_BINARY=OFF -DBUILD_FOR_FUZZING=OFF \
  -DENABLE_WALLET=OFF -DENABLE_EXTERNAL_SIGNER=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF \
  -DWITH_USDT=OFF -DWITH_CCACHE=OFF -DWITH_EMBEDDED_ASMAP=OFF -DINSTALL_MAN=OFF \
  >&2
cmake --build "$build" --target bitcoind bitcoin-cli -j "$jobs" >&2
mkdir -p "$cache/bin"
for exe in bitcoind bitcoin-cli; do
  install -m 0755 "$build/bin/$exe" "$cache/bin/$exe.tmp"
  mv -f "$cache/bin/$exe.tmp" "$cache/bin/$exe"
done
rm -rf "$build"
log "built in $(( $(date +%s) - start )) s: $("$bin" -version | head -n 1)"
usable || { log "$bin does not run"; exit 1; }
echo "$bin"
