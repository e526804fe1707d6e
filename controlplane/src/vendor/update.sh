#!/usr/bin/env bash
# Re-fetches flv.js from npm into this directory (see README.md).
set -euo pipefail
version=${1:?usage: update.sh VERSION (e.g. 1.6.2)}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "flv.js@$version" >/dev/null && tar xzf "flv.js-$version.tgz")
cp "$tmp/package/dist/flv.min.js" "$here/flv.min.js"
cp "$tmp/package/LICENSE" "$here/flv.js-LICENSE"
sha256sum "$here/flv.min.js"
