#!/usr/bin/env bash
# Starts the release gateway the way the load tool expects it: one shard
# (pinned), API on 127.0.0.1:18080, RTMP on 127.0.0.1:19350, no session rate
# limit (every load-tool client has the same IP and opens sessions faster
# than people do), the default RTMP connection limits (players do not count
# per address), enough ports and files for 1000+ sessions. Extra flags go to the
# controlplane; MGW_GSO=false turns GSO batching off in the dataplane.
#
#   perf/gateway.sh &                       # then, in another shell:
#   MGW_ADMIN_KEY=loadgen-admin-key-0123456789 target/release/loadgen \
#       --api http://127.0.0.1:18080 --scenario fanout --subscribers 1000 --baseline
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dataplane -p controlplane -p perf
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export MGW_ADMIN_KEY="${MGW_ADMIN_KEY:-loadgen-admin-key-0123456789}"
rm -f /dev/shm/mgw-perf
exec target/release/controlplane --http 127.0.0.1:18080 --rtmp 127.0.0.1:19350 \
    --shards "${SHARDS:-1}" --shm-name mgw-perf --udp-ports 20000-24999 \
    --session-rate 100000 --session-burst 100000 \
    --player-session-rate 100000 --player-session-burst 100000 "$@"
