#!/usr/bin/env bash
# Builds the control-plane binaries the end-to-end tests run — kube-apiserver
# and etcd — from the Go module proxy (no prebuilt downloads), and caches
# them under ~/.cache/portico so later runs start at once. Prints the
# directory holding both binaries.
#
# The first build takes a few minutes on two cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}
OUT="$CACHE/bin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { echo "build-e2e-bins: $*" >&2; }

# kube-apiserver: built in a scratch module (hack/lib.sh).
kube_scratch_module "$work/kube" portico.local/e2e-kube-apiserver
log "building kube-apiserver $KUBE_VERSION (a few minutes the first time)"
(cd "$work/kube" && GOFLAGS=-mod=mod go build -trimpath -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"

mkdir -p "$work/etcd"
printf 'module portico.local/e2e-etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$work/etcd/go.mod"
log "building etcd $ETCD_VERSION"
(cd "$work/etcd" && GOFLAGS=-mod=mod go build -trimpath -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
mv "$OUT/etcd.tmp" "$OUT/etcd"
echo "$OUT"
