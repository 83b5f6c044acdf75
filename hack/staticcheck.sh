#!/usr/bin/env bash
# Runs staticcheck, built once from the Go module proxy and cached under
# ~/.cache/portico (CI machines start with nothing else).
set -euo pipefail
cd "$(dirname "$0")/.."
# By module version: the Go module proxy no longer resolves the release
# name 2025.1.1 (403 Forbidden). v0.8.2 builds with Go 1.26; it also flags
# protobuf fields marked deprecated (SA1019), which the code ignores, with
# the reason, where Istio's control plane still sends them.
VERSION=${STATICCHECK_VERSION:-v0.8.2}
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}
bin="$CACHE/bin/staticcheck-$VERSION"
if [[ ! -x $bin/staticcheck ]]; then
  mkdir -p "$bin"
  GOBIN="$bin" go install "honnef.co/go/tools/cmd/staticcheck@$VERSION"
fi
exec "$bin/staticcheck" "$@" ./...
