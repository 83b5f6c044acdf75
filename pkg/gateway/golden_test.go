package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/jwks"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// goldenNow pins certificate validity checks.
var goldenNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// goldenOutput is what a case's .out.yaml holds.
type goldenOutput struct {
	Proxies  []*ir.Proxy      `json:"proxies"`
	Statuses []*status.Status `json:"statuses"`
	// APIStatuses are the Gateway API statuses (gatewayapi-* cases).
	APIStatuses []*status.APIStatus `json:"apiStatuses,omitempty"`
}

// LoadCase decodes a test input: multi-document YAML with ${PEM:file}
// substitutions and an optional first line "# classes: k=v,k=v; k=v".
func loadCase(t *testing.T, path string) (*resource.Resources, Options) {
	t.Helper()
	data := readFile(t, path)
	opts := Options{Now: func() time.Time { return goldenNow }, Classes: []map[string]string{{"istio": "ingressgateway"}}, ProxiesKnown: true,
		JWKS: goldenJWKS(t)}
	if first, _, _ := strings.Cut(string(data), "\n"); strings.HasPrefix(first, "# classes:") {
		opts.Classes = nil
		for _, c := range strings.Split(strings.TrimPrefix(first, "# classes:"), ";") {
			labels := map[string]string{}
			for _, kv := range strings.Split(strings.TrimSpace(c), ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					labels[k] = v
				}
			}
			opts.Classes = append(opts.Classes, labels)
		}
	}
	objs, errs := resource.Decode(golden.ExpandPEM(data), filepath.Base(path))
	res := &resource.Resources{}
	for _, o := range objs {
		if err := res.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range errs {
		res.Invalid = append(res.Invalid, resource.InvalidResource{Key: e.Key, Source: e.Source, Error: e.Error()})
	}
	res.Sort()
	return res, opts
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			res, opts := loadCase(t, in)
			if strings.HasPrefix(name, "gatewayapi-") && len(res.Invalid) > 0 {
				// The binder reports undecodable Istio objects, not
				// Gateway API ones: a typo would empty the case silently.
				t.Fatalf("input does not decode: %+v", res.Invalid)
			}
			result := Build(res, opts)
			out, err := yaml.Marshal(goldenOutput{Proxies: result.Proxies, Statuses: result.Statuses, APIStatuses: result.APIStatuses})
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, strings.TrimSuffix(in, ".in.yaml")+".out.yaml", out)
			// The build is a pure function: a second run is identical.
			second := Build(res, opts)
			again, _ := yaml.Marshal(goldenOutput{Proxies: second.Proxies, Statuses: second.Statuses, APIStatuses: second.APIStatuses})
			if string(again) != string(out) {
				t.Errorf("Build is not deterministic")
			}
		})
	}
}

// goldenJWKS serves Istio's sample key set at the jwksUri golden cases use;
// other URIs fail.
func goldenJWKS(t *testing.T) jwks.Static {
	return jwks.Static{"http://127.0.0.1:8443/jwks.json": strings.TrimSpace(string(readFile(t, "../jwks/testdata/istio-sample-jwks.json")))}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
