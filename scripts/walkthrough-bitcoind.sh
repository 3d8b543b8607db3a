#!/usr/bin/env bash
# The README's walk-through on a real `bitcoind -regtest`, run and checked: a coordinator
# on the node (`--chain bitcoind`), three wallets on the same node (`--chain node`), one
# round, one cooperative withdrawal (and its fee bump), one unilateral exit, one reclaim
# and one send. Every command's output goes to the transcript (stdout, or the file named
# by $1) and is checked; the first check that fails stops the script with status 1.
#
# Needs the release binaries (`cargo build --release`) and a `bitcoind` with `bitcoin-cli`
# beside it: $COHORT_BITCOIND, or what `scripts/bitcoind.sh` builds. Everything lives in a
# temporary directory, removed at the end; the node and the coordinator are stopped.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}/release
bitcoind=${COHORT_BITCOIND:-$("$repo/scripts/bitcoind.sh")}
cli_bin=$(dirname "$bitcoind")/bitcoin-cli
transcript=${1:-/dev/stdout}
work=$(mktemp -d)
[ "$transcript" = /dev/stdout ] || : > "$transcript"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc=$(port); p2p=$(port); quic=$(port)
node="$work/node"; mkdir -p "$node"
say() { printf '%s\n' "$*" >> "$transcript"; }
# Runs a command as the transcript shows it ($ cohort ...), keeps its output in $out.
run() {
  say "\$ $*"
  local status=0
  out=$("$@" 2>&1) || status=$?
  printf '%s\n' "$out" | sed 's/^/    /' >> "$transcript"
  [ "$status" -eq 0 ] || { say "FAILED (status $status): $*"; exit 1; }
}
expect() {
  grep -q -- "$1" <<< "$out" || { say "FAILED: expected \"$1\""; exit 1; }
}
bcli() { "$cli_bin" -regtest -datadir="$node" -rpcport="$rpc" "$@"; }

cd "$work"
"$bitcoind" -regtest -datadir="$node" -rpcport="$rpc" -port="$p2p" -listen=0 -daemon=0 \
  -server=1 -fallbackfee=0.0001 -txindex=0 > "$work/bitcoind.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do bcli getblockchaininfo > /dev/null 2>&1 && break; sleep 0.2; done
cookie="$node/regtest/.cookie"

cat > coordinator.toml <<EOF
network = "regtest"
bitcoind_url = "http://127.0.0.1:$rpc"
bitcoind_cookie = "$cookie"
round_interval_secs = 5
registration_window_secs = 10
phase_timeout_secs = 20
deposit_csv = 400
safety_margin = 20
exit_csv = 20
service_ppm = 1
EOF
"$target/cohort-coordinator" run --chain bitcoind --config coordinator.toml --data-dir coord \
  --listen "127.0.0.1:$quic" > coordinator.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "cohort://" coordinator.log && break; sleep 0.2; done
uri=$(grep -o 'cohort://[0-9a-f]*@[0-9.:]*' coordinator.log | head -1)
[ -n "$uri" ] || { cat coordinator.log; exit 1; }
say "# coordinator: cohort-coordinator run --chain bitcoind --config coordinator.toml"
say "#   listening on $uri"

cohort() { "$target/cohort" "$@"; }
for who in alice bob carol; do
  run cohort --data-dir "$who" init --coordinator "$uri" --chain node \
    --bitcoind-url "http://127.0.0.1:$rpc" --bitcoind-cookie "$cookie"
  expect "bcrt1p"
done
addr() { cohort --data-dir "$1" --json address | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$2\"])"; }
# Deposits and fee coins from the node's own mining (coinbases mature after 100 blocks).
for who in alice bob carol; do
  bcli generatetoaddress 1 "$(addr "$who" address)" > /dev/null
  bcli generatetoaddress 1 "$(addr "$who" fee_address)" > /dev/null
done
bcli generatetoaddress 1 "$(addr carol address)" > /dev/null
run cohort --data-dir carol dev mine 101
run cohort --data-dir alice deposits
expect "unspent, 1[0-9][0-9] confirmation"

# alice and bob join the next round; blocks come every 2 s meanwhile.
( while sleep 2; do cohort --data-dir carol dev mine 1 > /dev/null 2>&1 || true; done ) &
miner=$!; pids+=($miner)
cohort --data-dir bob join > bob-join.log 2>&1 &
bob=$!
run cohort --data-dir alice join
expect "finalized (funding tx"
expect "done: batch confirmed"
wait "$bob" || { cat bob-join.log >> "$transcript"; say "FAILED: bob's join"; exit 1; }
kill "$miner"; wait "$miner" 2>/dev/null || true
run cohort --data-dir alice status
expect "exit paths (1)"

# carol withdraws one deposit to bob's fee address at once, then bumps its fee.
deposit=$(cohort --data-dir carol --json deposits | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["deposits"][0]["outpoint"])')
run cohort --data-dir carol withdraw "$(addr bob fee_address)" --deposit "$deposit" --fee-rate 2
expect "published"
first=$(grep -o 'withdrawal [0-9a-f]\{64\}' <<< "$out" | head -1 | cut -d' ' -f2)
run cohort --data-dir carol withdraw --bump "$first" --fee-rate 5
expect "replaces $first"
run cohort --data-dir carol dev mine 1
run cohort --data-dir carol deposits
expect "withdrawn by"

# alice leaves the batch alone, one step per block, the coordinator not needed.
for _ in $(seq 1 10); do
  run cohort --data-dir alice exit 1
  grep -q "^exited" <<< "$out" && break
  cohort --data-dir carol dev mine 21 > /dev/null
done
expect "exited"
# bob's watch sees that someone else published a node of his exit path.
run cohort --data-dir bob watch --once
expect "published by"
run cohort --data-dir carol dev mine 1
run cohort --data-dir alice send "$(addr carol fee_address)" --all --fee-rate 2
expect "sent"

# carol reclaims her other deposit through its timeout path (mining the 400 blocks).
run cohort --data-dir carol reclaim --mine
expect "reclaimed by"
say "# walk-through done: every command checked"
