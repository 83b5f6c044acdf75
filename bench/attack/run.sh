#!/usr/bin/env bash
# make bench-attack: hostile loads against Portico standalone and nginx
# side by side (bench/attack). Results: bench/results/attack.md.
#
#   bench/attack/run.sh [-r GITREF] [bench/attack flags, e.g. -duration 30s -label after]
#
# -r builds Portico from another revision (e.g. -r 48ce6b5 for "before").
# The proxies are pinned to CPU 1, the load generator to CPU 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
ref=
if [[ ${1:-} == -r ]]; then ref=$2; shift 2; fi
bins=$(mktemp -d)
src=
trap 'rm -rf "$bins" ${src:+"$src"}' EXIT
if [[ -n $ref ]]; then
  src=$(mktemp -d)
  git archive "$ref" | tar -x -C "$src"
  (cd "$src" && go build -o "$bins/" ./cmd/gateway-controller)
else
  go build -o "$bins/" ./cmd/gateway-controller
fi
go build -o "$bins/attack" ./bench/attack
if ! command -v nginx >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  else
    echo "bench-attack: nginx missing; run with -targets portico, or install nginx" >&2
  fi
fi
ulimit -n "$(ulimit -Hn)"
pin=()
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then pin=(taskset -c 0); fi
"${pin[@]}" "$bins/attack" -bins "$bins" "$@"
