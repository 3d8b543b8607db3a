#!/usr/bin/env bash
# Measures what the batch size costs (issue 11 item 3): runs `cohort-sim` at each
# `--max-batch-weight`, once clean and once with a fraction of participants sending an
# invalid tree signature (so every batch with a culprit retries), and writes a Markdown
# table to stdout. Usage:
#   scripts/batch-sizes.sh [USERS] [WEIGHTS] [FAULTS]
#   scripts/batch-sizes.sh 5000 25000,50000,100000,200000,400000 0.002
# Runs the release `cohort-sim` from target/ (builds it first).
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-5000}
weights=${2:-25000,50000,100000,200000,400000}
faults=${3:-0.002}
cargo build --release -q -p cohort-sim
target=${CARGO_TARGET_DIR:-target}
sim="$target/release/cohort-sim"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for w in ${weights//,/ }; do
  "$sim" --users "$users" --seed 1 --max-batch-weight "$w" --json "$out/clean-$w.json" >/dev/null
  "$sim" --users "$users" --seed 1 --max-batch-weight "$w" --faults "$faults" \
    --fault-kind invalid-sig --fault-phase tree --json "$out/faulty-$w.json" >/dev/null
done
python3 - "$out" "$users" "$weights" "$faults" <<'PY'
import json, sys
out, users, weights, faults = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
print(f"`scripts/batch-sizes.sh {users} {','.join(weights)} {faults}`: {users:,} users, seed 1, "
      f"radix 4; the faulty run has a fraction {faults} of participants send an invalid tree "
      "signature, so each batch holding one retries without it.\n")
print("| max batch weight | batches | inputs per batch | wall (s) | coordinator CPU / user "
      "| participant CPU / user | bytes to each user | vB / user on chain | exit depth "
      "| exit vB (sampled mean) | faulty run: attempts | faulty run: extra wall (s) "
      "| faulty run: extra bytes to each user |")
print("|" + "---:|" * 13)
for w in weights:
    c = json.load(open(f"{out}/clean-{w}.json"))
    f = json.load(open(f"{out}/faulty-{w}.json"))
    n = c["users"]
    batches = c["batches"]
    inputs = sum(b["inputs"] for b in batches) / len(batches)
    exits = c["exits"]
    exit_vb = sum(e["vbytes"] for e in exits) / len(exits) if exits else 0
    attempts = sum(b["attempts"] for b in f["batches"])
    print(f"| {int(w):,} | {len(batches)} | {inputs:,.0f} | {c['wall_ms']/1e3:.1f} "
          f"| {c['coordinator_cpu_ms']*1e3/n:,.0f} µs | {c['participant_cpu_ms']*1e3/n:,.0f} µs "
          f"| {c['bytes_to_participants']/n/1024:,.1f} KiB "
          f"| {c['chain']['funding_vbytes']/n:.1f} | {c['chain']['depth']} | {exit_vb:,.0f} "
          f"| {attempts} in {len(f['batches'])} batches "
          f"| {(f['wall_ms']-c['wall_ms'])/1e3:+.1f} "
          f"| {(f['bytes_to_participants']/f['users']-c['bytes_to_participants']/n)/1024:+,.1f} KiB |")
PY
