//go:build linux

package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portico-gateway/portico/internal/manifests"
)

// TestDeployManifestsAreAccepted: everything `kubectl apply -k` would send
// from config/deploy (and its stock Envoy variant) and from the Kubernetes
// samples passes the real API server's validation (server-side apply, dry
// run, strict field validation: Portico's CRD schemas included). The controller in
// these tests already runs with the manifests' RBAC.
func TestDeployManifestsAreAccepted(t *testing.T) {
	needHarness(t)
	for _, dir := range []string{"config/deploy", "config/deploy/envoy",
		"config/samples/kubernetes/seed001", "config/samples/kubernetes/seed002", "config/samples/kubernetes/seed004"} {
		objs, err := manifests.Build(filepath.Join(h.root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			// Client.Apply takes no field validation option: the Patch form
			// is what asks the API server for Strict validation.
			//lint:ignore SA1019 see above
			err := h.client.Patch(context.Background(), o, client.Apply, client.DryRunAll, client.ForceOwnership,
				client.FieldOwner("e2e"), client.FieldValidation("Strict"))
			if err != nil {
				t.Errorf("%s: %s %s/%s rejected: %v", dir, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
		if len(objs) == 0 {
			t.Errorf("%s: nothing rendered", dir)
		}
	}
}
