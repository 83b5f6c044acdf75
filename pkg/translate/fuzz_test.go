package translate_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/portico-gateway/portico/internal/fuzzcache"
	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

// maxFuzzInput bounds a fuzz input. It stays well above Envoy's 16 KiB
// limits on single values (header values, regexes), so inputs that
// break those limits can still be found.
const maxFuzzInput = 64 << 10

// FuzzYAMLToXDS: whatever YAML users write, the resources Portico emits
// must pass Envoy's validation rules — invalid input is caught by binding
// and reported, never turned into configuration a proxy would reject.
//
// The work per input is kept small (see internal/fuzzcache): unchanged
// documents are not decoded again and byte-identical resources are not
// validated again, with both caches checked against fresh computations;
// the binder's options are built once.
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
	opts := gateway.Options{Classes: []map[string]string{{"istio": "ingressgateway"}}, Now: func() time.Time { return now }}
	docs, valid := fuzzcache.NewDocuments(), newValidations()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		objs, err := docs.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		res := &resource.Resources{}
		for _, o := range objs {
			res.Add(o)
		}
		out := gateway.Build(res, opts)
		for _, p := range out.Proxies {
			tr, err := translate.Translate(p, translate.Options{})
			if err != nil {
				t.Fatalf("binding produced IR translation rejects: %v", err)
			}
			for _, list := range [][]proto.Message{msgs(tr.Listeners), msgs(tr.Routes), msgs(tr.Clusters), msgs(tr.Endpoints), msgs(tr.Secrets)} {
				for _, m := range list {
					if err := valid.Deep(m); err != nil {
						t.Errorf("invalid resource: %v", err)
					}
				}
			}
		}
	})
}

// maxValidations bounds the validation cache (emptied when full).
const maxValidations = 20000

// validations runs validate.Deep through a cache keyed by a message's
// type and deterministic encoding: a mutation of one document leaves most
// translated resources byte-identical, and validating them again is most
// of the translation target's remaining cost. Every Nth call validates
// afresh and compares.
type validations struct {
	CheckEvery int

	mu    sync.Mutex
	cache map[string]string // "" = valid, else the error text
	calls int
}

// newValidations returns an empty cache checking every 64th message.
func newValidations() *validations {
	return &validations{CheckEvery: 64, cache: map[string]string{}}
}

// Deep is validate.Deep, cached. The error is validate.Deep's (its text),
// or one saying the cache disagreed with a fresh validation.
func (v *validations) Deep(m proto.Message) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding %T: %w", m, err)
	}
	key := string(m.ProtoReflect().Descriptor().FullName()) + "\x00" + string(b)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	msg, ok := v.cache[key]
	if !ok || v.CheckEvery > 0 && v.calls%v.CheckEvery == 0 {
		fresh := ""
		if err := validate.Deep(m); err != nil {
			fresh = err.Error()
		}
		if ok && fresh != msg {
			return fmt.Errorf("validation cache said %q, a fresh validation %q", msg, fresh)
		}
		if len(v.cache) >= maxValidations {
			clear(v.cache)
		}
		v.cache[key], msg = fresh, fresh
	}
	if msg != "" {
		return errors.New(msg)
	}
	return nil
}

// TestValidationCacheMatchesFresh validates a random sequence of valid and
// invalid resources (with repeats, as fuzzing produces them) through the
// cache and compares every answer with a fresh validate.Deep.
func TestValidationCacheMatchesFresh(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	var pool []proto.Message
	for _, f := range files {
		tr, err := translate.Translate(loadProxy(t, f), translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, list := range [][]proto.Message{msgs(tr.Listeners), msgs(tr.Routes), msgs(tr.Clusters), msgs(tr.Endpoints), msgs(tr.Secrets)} {
			pool = append(pool, list...)
		}
		for _, c := range tr.Clusters { // invalid: a connect timeout must be positive
			bad := proto.Clone(c).(*clusterv3.Cluster)
			bad.ConnectTimeout = durationpb.New(-time.Second)
			pool = append(pool, bad)
		}
		for _, r := range tr.Routes { // invalid: a virtual host needs domains
			bad := proto.Clone(r).(*routev3.RouteConfiguration)
			bad.VirtualHosts = append(bad.VirtualHosts, &routev3.VirtualHost{Name: "no-domains"})
			pool = append(pool, bad)
		}
	}
	if len(pool) < 20 {
		t.Fatalf("only %d resources to validate", len(pool))
	}
	v := newValidations()
	v.CheckEvery = 0 // compared explicitly below
	rng := rand.New(rand.NewPCG(3, 4))
	invalid := 0
	for step := 0; step < 3000; step++ {
		m := pool[rng.IntN(len(pool))]
		got, fresh := v.Deep(m), validate.Deep(m)
		if fmt.Sprint(got) != fmt.Sprint(fresh) {
			t.Fatalf("step %d, %T: cache said %v, a fresh validation %v", step, m, got, fresh)
		}
		if fresh != nil {
			invalid++
		}
	}
	if invalid == 0 {
		t.Fatal("no invalid resource was drawn: the test compares nothing interesting")
	}
}
