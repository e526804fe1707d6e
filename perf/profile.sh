#!/usr/bin/env bash
# Profiles the running dataplane (started by perf/gateway.sh or the README's
# run command) while a load runs:
#
#   perf/profile.sh stat 10          # perf stat: cycles, instructions, IPC, context switches
#   perf/profile.sh record 10        # perf record -g, then a text report of the hottest symbols
#   perf/profile.sh flame 10         # the same as an SVG flame graph (installs inferno once)
#
# Start the load first (e.g. `target/release/loadgen --scenario fanout
# --subscribers 1000 --rate 600 --seconds 20 ...`). Output goes to target/perf/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-record}"
secs="${2:-10}"
command -v perf >/dev/null || { apt-get install -y linux-perf >/dev/null; }
pid="$(pgrep -xo dataplane)" || { echo "no dataplane running" >&2; exit 1; }
out=target/perf
mkdir -p "$out"
case "$mode" in
stat)
    perf stat -e task-clock,cycles,instructions,context-switches,cpu-migrations,page-faults \
        -p "$pid" -- sleep "$secs" 2>&1 | tee "$out/stat.txt"
    ;;
record | flame)
    perf record -F 999 -g -p "$pid" -o "$out/perf.data" -- sleep "$secs"
    perf report -i "$out/perf.data" --no-children --percent-limit 1.5 --stdio \
        --sort symbol 2>/dev/null | grep -v '^$' | head -80 | tee "$out/report.txt"
    if [ "$mode" = flame ]; then
        command -v inferno-flamegraph >/dev/null || cargo install inferno
        perf script -i "$out/perf.data" | inferno-collapse-perf | inferno-flamegraph > "$out/flame.svg"
        echo "flame graph: $out/flame.svg"
    fi
    ;;
*)
    echo "usage: $0 stat|record|flame [seconds]" >&2
    exit 2
    ;;
esac
