#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, on a fresh Debian machine:
# iproute2 for the e2e tests' network namespaces, and Chromium (with a
# font) for the topology page's headless-browser test
# (cmd/gateway-controller TestTopologyPage). Does nothing when they are
# there already, or when not root (the e2e tests skip without root; the
# topology test skips without chromium, except under CI=true).
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
if [[ ${#missing[@]} -eq 0 || $(id -u) -ne 0 ]]; then
  exit 0
fi
echo "ensure-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
