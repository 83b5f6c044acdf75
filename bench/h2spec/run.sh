#!/usr/bin/env bash
# h2spec (the HTTP/2 conformance suite, github.com/summerwind/h2spec)
# against the real edge proxy over h2c and over TLS with ALPN h2.
#
#   bench/h2spec/run.sh [-r GITREF]
#
# h2spec is built from the Go module proxy (it is not a dependency of the
# module); -r runs the same test against the proxy at another revision
# (e.g. -r 29050c0, before the proxy had its own HTTP/2 server). It takes
# about 10 s and stops by itself (h2spec's timeout is 2 s per case, the
# test's 3 min per mode).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=v2.2.1+incompatible
ref=
if [[ ${1:-} == -r ]]; then ref=$2; shift 2; fi
bins=$(mktemp -d)
src=
trap 'rm -rf "$bins" ${src:+"$src"}' EXIT
GOBIN=$bins go install "github.com/summerwind/h2spec/cmd/h2spec@$version"
dir=.
if [[ -n $ref ]]; then
  src=$(mktemp -d)
  git archive "$ref" | tar -x -C "$src"
  mkdir -p "$src/bench/h2spec"
  cp bench/h2spec/h2spec_test.go "$src/bench/h2spec/"
  dir=$src
fi
cd "$dir"
H2SPEC=$bins/h2spec go test -count=1 -v -run TestH2Spec ./bench/h2spec/ "$@"
