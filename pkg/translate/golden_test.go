package translate_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

// dump renders resources as YAML in Envoy's config_dump spelling, as a
// proxy decodes them (metadata is emitted encoded: see packMetadata).
func dump(t *testing.T, res *translate.Resources) []byte {
	t.Helper()
	conv := func(msgs []proto.Message) []any {
		var out []any
		for _, m := range msgs {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(decoded(t, m))
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	doc := map[string]any{
		"listeners": conv(msgs(res.Listeners)),
		"routes":    conv(msgs(res.Routes)),
		"clusters":  conv(msgs(res.Clusters)),
		"endpoints": conv(msgs(res.Endpoints)),
		"secrets":   conv(msgs(res.Secrets)),
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decoded is m as its encoding decodes.
func decoded(t *testing.T, m proto.Message) proto.Message {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func msgs[T proto.Message](list []T) []proto.Message {
	out := make([]proto.Message, len(list))
	for i, m := range list {
		out[i] = m
	}
	return out
}

func validateAll(t *testing.T, res *translate.Resources) {
	t.Helper()
	for _, m := range append(append(append(append(msgs(res.Listeners), msgs(res.Routes)...), msgs(res.Clusters)...), msgs(res.Endpoints)...), msgs(res.Secrets)...) {
		if err := validate.Deep(m); err != nil {
			t.Errorf("invalid resource: %v", err)
		}
	}
}

func loadProxy(t *testing.T, path string) *ir.Proxy {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := &ir.Proxy{}
	if err := yaml.UnmarshalStrict(b, p); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			p := loadProxy(t, in)
			res, err := translate.Translate(p, translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			validateAll(t, res)
			out := dump(t, res)
			golden.Check(t, strings.TrimSuffix(in, ".in.yaml")+".out.yaml", out)
			again, _ := translate.Translate(p, translate.Options{})
			if string(dump(t, again)) != string(out) {
				t.Error("translation is not deterministic")
			}
		})
	}
}

// TestBinderOutputsTranslate feeds every proxy of every binder golden case
// through translation: whatever binding emits must translate into resources
// that pass Envoy's validation rules.
func TestBinderOutputsTranslate(t *testing.T) {
	files, _ := filepath.Glob("../gateway/testdata/*.out.yaml")
	if len(files) == 0 {
		t.Fatal("no binder outputs")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Proxies []*ir.Proxy `json:"proxies"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range doc.Proxies {
			res, err := translate.Translate(p, translate.Options{})
			if err != nil {
				t.Errorf("%s proxy %s: %v", f, p.Name, err)
				continue
			}
			validateAll(t, res)
		}
	}
}
