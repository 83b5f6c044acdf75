#!/usr/bin/env bash
# Runs staticcheck, built once from the Go module proxy and cached under
# ~/.cache/portico (CI machines start with nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${STATICCHECK_VERSION:-2025.1.1}
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}
bin="$CACHE/bin/staticcheck-$VERSION"
if [[ ! -x $bin/staticcheck ]]; then
  mkdir -p "$bin"
  GOBIN="$bin" go install "honnef.co/go/tools/cmd/staticcheck@$VERSION"
fi
exec "$bin/staticcheck" "$@" ./...
