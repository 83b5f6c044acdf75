package gateway

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/fuzzcache"
	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/resource"
)

// FuzzDecodeAndBind feeds arbitrary YAML through decoding and binding. It
// must never panic, every proxy must carry a name, and every resource must
// get a status with conditions. (Translation of the resulting IR is fuzzed
// for validity in pkg/translate.) Documents a mutation left unchanged are
// served from a checked cache (internal/fuzzcache): decoding dominates
// the cost of an input, and every changed document is still decoded.
func FuzzDecodeAndBind(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(golden.ExpandPEM(b))
	}
	opts := Options{Classes: []map[string]string{{"istio": "ingressgateway"}}, Now: func() time.Time { return goldenNow }}
	docs := fuzzcache.NewDocuments()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		objs, err := docs.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		res := &resource.Resources{}
		for _, o := range objs {
			if err := res.Add(o); err != nil {
				t.Fatal(err)
			}
		}
		out := Build(res, opts)
		for _, p := range out.Proxies {
			for _, l := range p.Listeners {
				if len(l.FilterChains) == 0 {
					t.Fatalf("listener %s without filter chains", l.Name)
				}
			}
		}
		for _, s := range out.Statuses {
			if len(s.Conditions) != 2 {
				t.Fatalf("status of %s has %d conditions", s.Key, len(s.Conditions))
			}
		}
	})
}
