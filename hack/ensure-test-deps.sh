#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, on a fresh Debian machine:
# iproute2 for the e2e tests' network namespaces. Does nothing when it is
# there already, or when not root (the e2e tests skip without root).
set -euo pipefail
if command -v ip >/dev/null 2>&1 || [[ $(id -u) -ne 0 ]]; then
  exit 0
fi
echo "ensure-test-deps: installing iproute2" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq iproute2 >/dev/null
