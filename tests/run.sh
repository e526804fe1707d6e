#!/usr/bin/env bash
# Runs every check and test of the repository on a fresh Debian machine.
# Installs what the tests need (ffmpeg, Chromium, redis-server, aiortc in .venv,
# playwright-core in tests/webrtc, FFmpeg's headers for the dataplane's
# default `reencode` feature: deploy/install-deps.sh), then: fmt, clippy, build, test, and
# every fuzz target for 10 s (installs cargo-fuzz if missing).
# Usage (as root, from anywhere): bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v ip >/dev/null || need_apt+=(iproute2)
# The node pool's store (`--cluster`): the tests start their own on loopback.
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v npm >/dev/null || need_apt+=(nodejs npm)
# nginx-rtmp: the baseline of the load tool's RTMP scenario.
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need_apt+=(nginx-light libnginx-mod-rtmp)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# What the default build links (FFmpeg's libavcodec, for the re-encoder):
# the README's run command installs the same.
bash deploy/install-deps.sh
if ! ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx '  srtp'; then
    echo "ffmpeg without SRTP support: the relay tests need it" >&2
    exit 1
fi

# WebRTC clients: aiortc (pinned, wheels only) and the Chromium driver.
if ! .venv/bin/python -c 'import aiortc, aiohttp, av, prometheus_client, openapi_spec_validator' 2>/dev/null; then
    echo "== installing aiortc, the Prometheus text parser and the OpenAPI validator into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q aiortc==1.16.0 aiohttp av==18.1.0 prometheus_client openapi-spec-validator
fi
if [ ! -d tests/webrtc/node_modules/playwright-core ]; then
    echo "== installing playwright-core (drives /usr/bin/chromium)"
    (cd tests/webrtc && npm install --no-audit --no-fund --silent)
fi

# io_uring buffer rings and sockets: give the tests room.
ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== no module import cycle in the dataplane (tests/module_cycles.py)"
python3 tests/module_cycles.py
echo "== no dataplane source file over 1000 lines (one module per concept)"
long=$(find dataplane -name '*.rs' -not -path '*/target/*' -exec wc -l {} + | awk '$2 != "total" && $1 > 1000')
if [ -n "$long" ]; then echo "split these: $long"; exit 1; fi
# Everything is built and tested with the dataplane's `reencode` feature (on
# by default) and its bench; the dataplane without it is linted too.
features=(--features benches/reencode)
echo "== cargo clippy --all-targets -- -D warnings (with and without the reencode feature)"
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
cargo clippy -p dataplane --no-default-features -- -D warnings
echo "== cargo build --workspace (the e2e tests run the built binaries)"
cargo build --workspace "${features[@]}"
echo "== cargo test --workspace"
cargo test --workspace "${features[@]}"
echo "== fuzz/run.sh 10: every fuzz target builds and runs 10 s from the recorded seeds"
bash fuzz/run.sh 10
echo "== all checks passed"
