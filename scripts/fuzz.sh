#!/usr/bin/env bash
# Builds every fuzz target under fuzz/ and runs each for SECONDS_PER_TARGET (default 30),
# one at a time; prints executions, coverage and time per target; fails on any crash.
# The `round` target runs whole rounds of the real engines (tens of schedules per second,
# not thousands of inputs): give it minutes, e.g. FUZZ_TARGETS=round scripts/fuzz.sh 1800.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address,
# -Cpasses=sancov-module, ...), which RUSTC_BOOTSTRAP=1 lets stable rustc accept. Installs
# cargo-fuzz from crates.io when it is missing. Environment:
#   FUZZ_TARGETS  space-separated targets to run (default: every file in fuzz/fuzz_targets)
#   FUZZ_WORK     where new corpus entries and crash artifacts go (default: fuzz/work)
#   FUZZ_NO_BUILD     set to 1 to run the binaries already built (skips `cargo fuzz build`)
#   FUZZ_ARGS     more libFuzzer flags for every target, e.g. FUZZ_ARGS=-max_len=1024 (the
#                 round target's schedules otherwise stay short for a long time)
#   FUZZ_SANITIZER    address (default), or none: no AddressSanitizer, a build about twice
#                     as fast and faster runs; the heap limits are checked by the targets'
#                     own counting allocator either way (what CI uses)
#   CARGO_TARGET_DIR  honoured as usual (default: fuzz/target)
# The committed seeds (fuzz/corpus/<target>) and crash regressions (fuzz/regressions/<target>)
# are read, never written. Run it under `nice` on a shared machine.
set -euo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
work="${FUZZ_WORK:-$root/fuzz/work}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    sanitizer="${FUZZ_SANITIZER:-address}"
    echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
    build_start=$(date +%s)
    if [ -n "${FUZZ_TARGETS:-}" ]; then
        for target in "${targets[@]}"; do
            cargo fuzz build -O -s "$sanitizer" "$target"
        done
    else
        # One cargo invocation for every target: the dependencies are compiled once.
        cargo fuzz build -O -s "$sanitizer"
    fi
    echo "== built in $(($(date +%s) - build_start))s"
fi
# Where `cargo fuzz build -O` puts the binaries.
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="${CARGO_TARGET_DIR:-$root/fuzz/target}/$host/release"

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    artifacts="$work/artifacts/$target"
    log="$work/logs/$target.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    inputs=("$corpus" "fuzz/corpus/$target")
    if [ -d "fuzz/regressions/$target" ]; then
        inputs+=("fuzz/regressions/$target")
    fi
    echo "== $target: ${secs}s"
    start=$(date +%s)
    # One process (libFuzzer's default without -jobs/-workers); new inputs go to $corpus only.
    read -r -a extra <<<"${FUZZ_ARGS:-}"
    set +e
    "$bin_dir/$target" "${inputs[@]}" ${extra[@]+"${extra[@]}"} \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1 || true)
    line=$(printf '%-20s %12s execs  %-22s %6ss' "$target" "${execs:-?}" "${cov:-cov: ? ft: ?}" "$elapsed")
    if [ "$rc" -ne 0 ]; then
        line="$line  CRASH (exit $rc, log $log)"
        failed+=("$target")
        grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY)' "$log" | head -n 5 || true
        ls "$artifacts" 2>/dev/null | sed 's/^/    artifact: /' || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "${#targets[@]} passed, 0 failed"
