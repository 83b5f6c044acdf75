package translate_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
)

// FuzzYAMLToXDS: whatever YAML users write, the resources Portico emits
// must pass Envoy's validation rules — invalid input is caught by binding
// and reported, never turned into configuration a proxy would reject.
func FuzzYAMLToXDS(f *testing.F) {
	files, _ := filepath.Glob("../gateway/testdata/*.in.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(golden.ExpandPEM(b))
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, _ := resource.Decode(data, "fuzz")
		res := &resource.Resources{}
		for _, o := range objs {
			res.Add(o)
		}
		out := gateway.Build(res, gateway.Options{Classes: []map[string]string{{"istio": "ingressgateway"}}, Now: func() time.Time { return now }})
		for _, p := range out.Proxies {
			tr, err := translate.Translate(p, translate.Options{})
			if err != nil {
				t.Fatalf("binding produced IR translation rejects: %v", err)
			}
			validateAll(t, tr)
		}
	})
}
