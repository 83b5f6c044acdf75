package gwapicrds

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/internal/golden"
)

const root = "../.."

// TestCRDsUpToDate keeps config/crd/gateway-api equal to the bundles of
// the gateway-api version in go.mod: a file changed, missing or extra
// fails; `go test ./internal/gwapicrds -update` copies them again.
func TestCRDsUpToDate(t *testing.T) {
	modDir, version, err := ModuleDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range Channels {
		bundle, err := Bundle(modDir, ch)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, Dir, ch)
		names := Names(bundle)
		for _, name := range names {
			golden.Check(t, filepath.Join(dst, name), bundle[name])
		}
		entries, err := os.ReadDir(dst)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if slices.Contains(names, e.Name()) {
				continue
			}
			if golden.Updating() {
				if err := os.Remove(filepath.Join(dst, e.Name())); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Errorf("%s/%s is not in the %s bundle of %s %s (run go test -update)", dst, e.Name(), ch, Module, version)
		}
		// The bundle says which version it is: a copy from another
		// version of the module cannot pass for this one.
		crds := 0
		for _, name := range names {
			if !strings.HasPrefix(name, "gateway.networking.k8s.io_") || strings.Contains(name, "vap_") {
				continue
			}
			crds++
			if !strings.Contains(string(bundle[name]), "gateway.networking.k8s.io/bundle-version: "+version+"\n") {
				t.Errorf("%s (%s) does not carry bundle-version %s", name, ch, version)
			}
		}
		if crds < 9 {
			t.Errorf("%s bundle: %d CRDs; the kinds Portico reads need at least 9", ch, crds)
		}
	}
}

// The experimental channel is a superset of standard: every standard
// CRD exists in experimental (what the e2e harness installs relies on it).
func TestExperimentalIsASuperset(t *testing.T) {
	modDir, _, err := ModuleDir(root)
	if err != nil {
		t.Fatal(err)
	}
	std, err := Bundle(modDir, "standard")
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Bundle(modDir, "experimental")
	if err != nil {
		t.Fatal(err)
	}
	for name := range std {
		if _, ok := exp[name]; !ok {
			t.Errorf("%s is in standard but not experimental", name)
		}
	}
}
