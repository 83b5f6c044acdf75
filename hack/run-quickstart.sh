#!/usr/bin/env bash
# Runs the quickstart: the demo backends (counter on 127.0.0.1:18080, a
# MySQL-like service on 127.0.0.1:13306) and the standalone controller with
# its embedded proxy. Extra arguments go to gateway-controller.
set -euo pipefail
cd "$(dirname "$0")/.."
./bin/demo-backend -quiet &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT INT TERM
exec_args=(--standalone --config-dir config/samples/quickstart "$@")
./bin/gateway-controller "${exec_args[@]}"
