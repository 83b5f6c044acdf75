#!/usr/bin/env bash
# Builds h2spec (the HTTP/2 conformance suite, github.com/summerwind/h2spec)
# once from the Go module proxy into ~/.cache/portico and prints its path,
# so make test runs bench/h2spec against the proxy (CI machines start with
# nothing else).
set -euo pipefail
VERSION=${H2SPEC_VERSION:-v2.2.1+incompatible}
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}
bin="$CACHE/bin/h2spec-${VERSION%%+*}"
if [[ ! -x $bin/h2spec ]]; then
  mkdir -p "$bin"
  # h2spec has no go.mod: its dependencies resolve to their latest
  # versions. If that ever stops building, the h2spec test skips and says
  # so rather than failing the suite.
  if ! GOBIN="$bin" go install "github.com/summerwind/h2spec/cmd/h2spec@$VERSION" >&2; then
    echo "h2spec.sh: building h2spec failed; bench/h2spec will skip" >&2
    exit 0
  fi
fi
echo "$bin/h2spec"
