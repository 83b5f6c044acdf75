# Sourced by the build scripts in hack/: what they share.

# kube_scratch_module DIR MODULE writes DIR/go.mod for a scratch module
# that requires k8s.io/kubernetes $KUBE_VERSION, with its staging modules
# (which it requires as v0.0.0) pinned to the matching v0.x releases, so
# that `go build k8s.io/kubernetes/cmd/...` works from the module proxy.
kube_scratch_module() {
  local dir=$1 module=$2 staging_version="v0${KUBE_VERSION#v1}" m
  mkdir -p "$dir"
  {
    echo "module $module"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
             cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
             cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt \
             kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
             mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming; do
      echo "	k8s.io/$m => k8s.io/$m $staging_version"
    done
    echo ")"
  } > "$dir/go.mod"
}
