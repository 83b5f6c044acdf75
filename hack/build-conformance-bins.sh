#!/usr/bin/env bash
# Builds what the container-free Gateway API conformance harness
# (test/conformance) runs besides Portico itself, from the Go module proxy
# (no prebuilt downloads, no images), and caches it under ~/.cache/portico:
#
#   kube-apiserver, etcd              hack/build-e2e-bins.sh (shared with test/e2e)
#   kube-controller-manager,          k8s.io/kubernetes $KUBE_VERSION, built like
#   kube-scheduler                    kube-apiserver: a scratch module
#   echo-basic                        sigs.k8s.io/gateway-api/conformance $GWAPI_VERSION,
#                                     CGO_ENABLED=0 (static: the node agent runs it
#                                     as every backend pod's "image")
#
# Prints one directory holding (links to) all five binaries.
#
# Cold, the controller manager takes ~7 minutes on two cores (~2 warm);
# the rest well under a minute each. Each binary is built once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
GWAPI_VERSION=${GWAPI_VERSION:-v1.6.3}
CACHE=${PORTICO_CACHE:-$HOME/.cache/portico}
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "build-conformance-bins: $*" >&2; }

apiserver_dir=$("$here/build-e2e-bins.sh")
kube_dir="$CACHE/bin/kube-$KUBE_VERSION-controllers"
echo_dir="$CACHE/bin/echo-basic-$GWAPI_VERSION"
out="$CACHE/bin/conformance-kube-$KUBE_VERSION-gwapi-$GWAPI_VERSION"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The controller manager and the scheduler, built in a scratch module
# (hack/lib.sh) as build-e2e-bins.sh builds kube-apiserver.
if [[ ! -x "$kube_dir/kube-controller-manager" || ! -x "$kube_dir/kube-scheduler" ]]; then
  mkdir -p "$kube_dir"
  kube_scratch_module "$work/kube" portico.local/conformance-kube
  for cmd in kube-scheduler kube-controller-manager; do
    [[ -x "$kube_dir/$cmd" ]] && continue
    log "building $cmd $KUBE_VERSION (kube-controller-manager: ~7 minutes cold on two cores)"
    (cd "$work/kube" && GOFLAGS=-mod=mod go build -trimpath -o "$kube_dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$kube_dir/$cmd.tmp" "$kube_dir/$cmd"
  done
fi

# echo-basic: the conformance module's go.mod replaces sigs.k8s.io/gateway-api
# with ../, which is ignored when it is a dependency, so require the API
# module at the same version too.
if [[ ! -x "$echo_dir/echo-basic" ]]; then
  mkdir -p "$echo_dir" "$work/echo"
  printf 'module portico.local/conformance-echo\n\ngo 1.26\n\nrequire (\n\tsigs.k8s.io/gateway-api %s\n\tsigs.k8s.io/gateway-api/conformance %s\n)\n' \
    "$GWAPI_VERSION" "$GWAPI_VERSION" > "$work/echo/go.mod"
  log "building echo-basic $GWAPI_VERSION"
  (cd "$work/echo" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$echo_dir/echo-basic.tmp" \
    sigs.k8s.io/gateway-api/conformance/echo-basic)
  mv "$echo_dir/echo-basic.tmp" "$echo_dir/echo-basic"
fi

mkdir -p "$out"
ln -sfn "$apiserver_dir/kube-apiserver" "$out/kube-apiserver"
ln -sfn "$apiserver_dir/etcd" "$out/etcd"
ln -sfn "$kube_dir/kube-controller-manager" "$out/kube-controller-manager"
ln -sfn "$kube_dir/kube-scheduler" "$out/kube-scheduler"
ln -sfn "$echo_dir/echo-basic" "$out/echo-basic"
echo "$out"
