#!/usr/bin/env bash
# Rebuilds the topology page's bundle (pkg/topology/ui/dist/topology.js)
# from src/ and the npm packages pinned in package.json and
# package-lock.json: `npm ci`, then esbuild. The bundle is committed, so
# building Portico needs no npm; run this (`make topology-ui`) after
# changing the page's sources or its packages.
#
#   --check   build into a temporary directory and fail if the committed
#             bundle differs from what the sources build to.
set -euo pipefail
cd "$(dirname "$0")/../pkg/topology/ui"
npm ci --no-audit --no-fund --loglevel=error
if [[ ${1:-} == --check ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  npx esbuild src/main.js --bundle --minify --format=iife --target=es2020 --legal-comments=linked \
    --outfile="$out/topology.js" --log-level=warning
  for f in topology.js topology.js.LEGAL.txt; do
    if ! cmp -s "$out/$f" "dist/$f"; then
      echo "pkg/topology/ui/dist/$f is not what the sources build to: run make topology-ui" >&2
      exit 1
    fi
  done
  echo "pkg/topology/ui/dist is up to date" >&2
  exit 0
fi
npm run --silent build
