#!/usr/bin/env bash
# Measure nginx's behaviour on test/hostile's table and record it: the
# observed table goes to bench/hostile/nginx-reference.md and each case's
# Nginx field in test/hostile/cases_*.go is rewritten with what was seen.
#
#   bench/hostile/nginx-reference.sh [-run REGEXP]
#
# Installs nginx from Debian when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nginx >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  else
    echo "nginx is not installed (apt-get install nginx)" >&2
    exit 1
  fi
fi
go run ./bench/hostile -out bench/hostile/nginx-reference.md -write-cases test/hostile "$@"
gofmt -w test/hostile
