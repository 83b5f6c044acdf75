package main

import (
	"maps"
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// TestDeployManifestFlags: the gateway Deployments in config/deploy run
// flags this binary accepts, with labels equal to the pods' own (which
// Gateway selectors must match).
func TestDeployManifestFlags(t *testing.T) {
	for _, tc := range []struct {
		file, name string
		labels     map[string]string
	}{
		{"../../config/deploy/ingressgateway/deployment.yaml", "istio-ingressgateway", map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}},
		{"../../config/deploy/egressgateway/deployment.yaml", "istio-egressgateway", map[string]string{"istio": "egressgateway", "app": "istio-egressgateway"}},
	} {
		c := testenv.ManifestContainer(t, tc.file, tc.name, "istio-proxy")
		f, err := parseFlags(c.Args)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if !maps.Equal(f.labels, tc.labels) {
			t.Errorf("%s: --labels %v, pod labels %v", tc.file, f.labels, tc.labels)
		}
		if f.proxy.StatusAddress != ":15021" || f.proxy.AdminAddress != "127.0.0.1:15000" {
			t.Errorf("%s: status %q admin %q", tc.file, f.proxy.StatusAddress, f.proxy.AdminAddress)
		}
	}
}

func TestParseFlagsRejectsMistakes(t *testing.T) {
	for _, args := range [][]string{
		{"--labels", "istio"},
		{"--no-such-flag"},
		{"stray"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
