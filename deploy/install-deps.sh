#!/usr/bin/env bash
# Installs, if missing, the Debian packages the default build links: FFmpeg's
# libavcodec (its H264, VP8 and VP9 decoders, libdav1d for AV1, libx264 for
# H264) through `ffmpeg-next`, whose bindings bindgen makes with libclang.
# The dataplane's `reencode` feature (on by default) needs them; a build with
# `--no-default-features` does not (no re-encoding, no VP8/VP9/AV1 for RTMP
# players). Why FFmpeg and not crates that build codecs from source: see the
# comment on `ffmpeg-next` in dataplane/Cargo.toml.
# Usage (as root): bash deploy/install-deps.sh
set -euo pipefail
need=()
for pkg in libavcodec-dev libavformat-dev libavutil-dev libclang-dev clang pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "== installing ${need[*]} (FFmpeg's codecs for the dataplane's re-encoder)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
