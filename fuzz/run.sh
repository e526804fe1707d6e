#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, on the stable
# toolchain: cargo-fuzz with libFuzzer, RUSTC_BOOTSTRAP=1 for its -Z flags
# and no sanitizer (ASan needs nightly's std; our code has no unsafe on
# these paths, so the checks that matter are Rust's own: bounds, overflow
# in debug assertions, and the targets' asserts).
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]     (default 10 s, every target)
# Corpora grow in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET, which
# holds inputs recorded from real clients: see fuzz/seeds/README.md);
# crashes land in fuzz/artifacts/TARGET. Prints one line per target with
# its executions, and exits non-zero if any target crashed.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz --version 0.13.1 >/dev/null
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets (debug assertions on: overflow checks count).
cargo fuzz build --sanitizer none --debug-assertions

failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    log=$(mktemp)
    if cargo fuzz run --sanitizer none --debug-assertions "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
        printf '%-16s ok      %12s executions in %ss, coverage %s\n' "$t" "${execs:-?}" "$secs" "${cov:-?}"
    else
        failed=1
        printf '%-16s CRASHED (see fuzz/artifacts/%s)\n' "$t" "$t"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 || true
    fi
    rm -f "$log"
done
exit $failed
