package main

import (
	"testing"

	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/internal/testenv"
)

// TestDeployManifestFlags: the controller Deployment in config/deploy runs
// flags this binary accepts, in Kubernetes mode.
func TestDeployManifestFlags(t *testing.T) {
	c := testenv.ManifestContainer(t, "../../config/deploy/controller/deployment.yaml", "portico-controller", "controller")
	cfg, err := parseFlags(c.Args)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.standalone {
		t.Error("the Deployment must run in Kubernetes mode")
	}
	for flag, v := range map[string]string{"--node-ports": cfg.kube.nodePorts, "--target-ports": cfg.kube.targetPorts} {
		if _, err := proxycmd.ParsePortMap(v); err != nil {
			t.Errorf("%s: %v", flag, err)
		}
	}
	if cfg.kube.healthAddress != ":15021" || cfg.xdsAddress != ":15010" {
		t.Errorf("probes on %q, xDS on %q: the Deployment's ports say :15021 and :15010", cfg.kube.healthAddress, cfg.xdsAddress)
	}
}
