#!/usr/bin/env bash
# make bench: the data plane against nginx, haproxy and no proxy, then the
# control plane (rebuild cost, propagation, memory). Results go to
# bench/results/ as Markdown tables; bench/README.md explains them.
#
#   bench/run.sh                 everything (about 15 minutes on 2 cores)
#   bench/run.sh dataplane       only the data plane
#   bench/run.sh controlplane    only the control plane
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
mkdir -p bench/results

need_debian() {
  local missing=()
  for pkg in "$@"; do command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "bench: installing ${missing[*]} from Debian" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "bench: ${missing[*]} missing; those baselines are skipped" >&2
    fi
  fi
}

if [[ $what == all || $what == dataplane ]]; then
  need_debian nginx haproxy caddy
  if command -v nginx >/dev/null && [[ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]] && [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-stream >/dev/null || true
  fi
  go run ./bench/dataplane -out bench/results/dataplane.md "${@:2}"
fi
if [[ $what == all || $what == controlplane ]]; then
  go test -run '^$' -bench . -benchmem -benchtime 3x ./pkg/gateway ./pkg/translate ./pkg/controller | tee bench/results/controlplane-go-bench.txt
  go run ./bench/controlplane -out bench/results/controlplane.md "${@:2}"
fi
