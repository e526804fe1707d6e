#!/usr/bin/env bash
# Runs every check and test of the repository on a fresh Debian machine.
# Installs what the tests need (ffmpeg), then: fmt, clippy, build, test.
# Usage (as root, from anywhere): bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx '  srtp'; then
    echo "ffmpeg without SRTP support: the relay tests need it" >&2
    exit 1
fi

# io_uring buffer rings and sockets: give the tests room.
ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build --workspace (the e2e tests run the built binaries)"
cargo build --workspace
echo "== cargo test --workspace"
cargo test --workspace
echo "== all checks passed"
