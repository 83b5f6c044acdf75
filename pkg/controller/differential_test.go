package controller_test

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// The size of TestIncrementalEqualsFresh: -diff.sequences sequences of
// -diff.steps random edits each (or PORTICO_DIFF_SEQUENCES and
// PORTICO_DIFF_STEPS). The defaults, 500 × 20 = 10,000 edits, take about
// a minute with -race on two cores; -short runs a tenth. -diff.seed
// replays one sequence (the failure message prints it).
var (
	diffSequences = flag.Int("diff.sequences", envInt("PORTICO_DIFF_SEQUENCES", 500), "random edit sequences of TestIncrementalEqualsFresh")
	diffSteps     = flag.Int("diff.steps", envInt("PORTICO_DIFF_STEPS", 20), "edits per sequence of TestIncrementalEqualsFresh")
	diffSeed      = flag.Uint64("diff.seed", 0, "run only the sequence with this seed")
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// newMemos makes a map of the xDS snapshot memo (an unexported type that
// NewSnapshot hands back) by inferring it from NewSnapshot's signature.
func newMemos[M comparable](func(*translate.Resources, M) (*xds.Snapshot, M, error)) map[string]M {
	return map[string]M{}
}

// TestIncrementalEqualsFresh drives the control plane's caches through
// random edit sequences over Gateways, VirtualServices, DestinationRules,
// ServiceEntries, Services, EndpointSlices (with the Pods that label their
// endpoints) and Secrets — in file mode (a new object is a new pointer) and
// Kubernetes mode (UIDs, resourceVersions, informer copies of unchanged
// objects) — and after every step checks each incremental path against a
// computation from scratch:
//
//   - gateway.Builder's IR and statuses equal gateway.Build's;
//   - every class's translate.Translator output equals translate.Translate
//     (proto.Equal, resource by resource);
//   - xds.NewSnapshot with the previous step's memo yields the versions,
//     per-resource hashes and bytes of a memo-less NewSnapshot.
//
// A failure prints the seed, the step, the edits so far and a diff;
// -diff.seed=N replays that sequence alone.
func TestIncrementalEqualsFresh(t *testing.T) {
	// The test allocates much and keeps little: collecting less often
	// saves a tenth of its time under the race detector.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	sequences, steps := *diffSequences, *diffSteps
	if testing.Short() {
		sequences = max(1, sequences/10)
	}
	seeds := make([]uint64, 0, sequences)
	if *diffSeed != 0 {
		seeds = append(seeds, *diffSeed)
	} else {
		base := uint64(time.Now().UnixNano())
		if v, err := strconv.ParseUint(os.Getenv("PORTICO_DIFF_BASE_SEED"), 10, 64); err == nil {
			base = v
		}
		for i := range sequences {
			seeds = append(seeds, base+uint64(i))
		}
		t.Logf("%d sequences × %d edits, seeds %d… (PORTICO_DIFF_BASE_SEED=%d reproduces the run)", sequences, steps, base, base)
	}
	// Sequences are independent: spread them over the CPUs.
	var edits atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(seeds) || t.Failed() {
					return
				}
				edits.Add(int64(runSequence(t, seeds[i], steps)))
			}
		})
	}
	wg.Wait()
	t.Logf("%d edits checked", edits.Load())
}

func runSequence(t *testing.T, seed uint64, steps int) int {
	t.Helper()
	w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 1})
	opts := gateway.Options{Classes: randconfig.Classes, Now: func() time.Time { return randconfig.Now }}
	builder := gateway.NewBuilder()
	translators := map[string]*translate.Translator{}
	memos := newMemos(xds.NewSnapshot)
	var history []string
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d (-diff.seed=%d), step %d, after edits:\n  %s\n%s\n\nconfiguration:\n%s",
			seed, seed, step, strings.Join(history, "\n  "), fmt.Sprintf(format, args...), w.Dump())
	}
	for step := 0; step <= steps; step++ {
		if step > 0 {
			history = append(history, w.Edit())
		}
		res := w.Resources()
		got := builder.Build(res, opts)
		want := gateway.Build(res, opts)
		if !reflect.DeepEqual(got, want) {
			g, wt := mustYAML(t, got), mustYAML(t, want)
			if g != wt {
				fail(step, "gateway.Builder differs from gateway.Build:\n%s", lineDiff(wt, g))
				return step
			}
		}
		for _, p := range got.Proxies {
			tr, ok := translators[p.Name]
			if !ok {
				tr = translate.NewTranslator(translate.Options{})
				translators[p.Name] = tr
			}
			inc, incErr := tr.Translate(p)
			fresh, freshErr := translate.Translate(p, translate.Options{})
			if fmt.Sprint(incErr) != fmt.Sprint(freshErr) {
				fail(step, "class %s: Translator error %v, fresh translation error %v", p.Name, incErr, freshErr)
				return step
			}
			if freshErr != nil {
				continue
			}
			if d := diffResources(inc, fresh); d != "" {
				fail(step, "class %s: Translator differs from a fresh translation: %s", p.Name, d)
				return step
			}
			snap, next, err := xds.NewSnapshot(inc, memos[p.Name])
			freshSnap, _, freshErr := xds.NewSnapshot(fresh, nil)
			if fmt.Sprint(err) != fmt.Sprint(freshErr) {
				fail(step, "class %s: memoised snapshot error %v, memo-less error %v", p.Name, err, freshErr)
				return step
			}
			if err != nil {
				continue // the class keeps its previous memo, as Publish does
			}
			memos[p.Name] = next
			if d := diffSnapshots(snap, freshSnap); d != "" {
				fail(step, "class %s: memoised snapshot differs from a memo-less one: %s", p.Name, d)
				return step
			}
		}
	}
	return steps
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lineDiff shows the lines of want and got around the first difference.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(wl) && i < len(gl) && wl[i] == gl[i] {
		i++
	}
	from := max(0, i-8)
	ctx := func(l []string) string {
		return strings.Join(l[from:min(len(l), i+12)], "\n")
	}
	return fmt.Sprintf("first difference at line %d\n--- fresh:\n%s\n+++ incremental:\n%s", i+1, ctx(wl), ctx(gl))
}

func diffResources(got, want *translate.Resources) string {
	lists := []struct {
		name      string
		got, want []proto.Message
	}{
		{"listeners", msgs(got.Listeners), msgs(want.Listeners)},
		{"routes", msgs(got.Routes), msgs(want.Routes)},
		{"clusters", msgs(got.Clusters), msgs(want.Clusters)},
		{"endpoints", msgs(got.Endpoints), msgs(want.Endpoints)},
		{"secrets", msgs(got.Secrets), msgs(want.Secrets)},
	}
	for _, l := range lists {
		if len(l.got) != len(l.want) {
			return fmt.Sprintf("%d %s, fresh has %d", len(l.got), l.name, len(l.want))
		}
		for i := range l.got {
			// What the translator hands back for unchanged IR may be the
			// snapshot builder's compact stand-in of it, and metadata is
			// emitted encoded: compared as a proxy decodes them.
			if g, w := decoded(l.got[i]), decoded(l.want[i]); !proto.Equal(g, w) {
				return fmt.Sprintf("%s[%d]:\n%s", l.name, i, lineDiff(prototext.Format(w), prototext.Format(g)))
			}
		}
	}
	return ""
}

// decoded is m as its encoding decodes.
func decoded(m proto.Message) proto.Message {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return m
	}
	out := m.ProtoReflect().New().Interface()
	if proto.Unmarshal(b, out) != nil {
		return m
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

func diffSnapshots(got, want *xds.Snapshot) string {
	if !reflect.DeepEqual(got.Versions, want.Versions) {
		return fmt.Sprintf("versions %v, memo-less %v", got.Versions, want.Versions)
	}
	if !reflect.DeepEqual(got.VersionMap, want.VersionMap) {
		return fmt.Sprintf("resource versions %v, memo-less %v", got.VersionMap, want.VersionMap)
	}
	if got.Version() != want.Version() {
		return "snapshot version differs"
	}
	for typ := range want.Versions {
		if got.GetVersion(typ) != want.GetVersion(typ) {
			return fmt.Sprintf("%s: published version %s, memo-less %s", typ, got.GetVersion(typ), want.GetVersion(typ))
		}
		g, w := got.GetResources(typ), want.GetResources(typ)
		if len(g) != len(w) {
			return fmt.Sprintf("%s: %d resources, memo-less %d", typ, len(g), len(w))
		}
		for name, wr := range w {
			gr, ok := g[name]
			if !ok {
				return fmt.Sprintf("%s %s missing", typ, name)
			}
			// Route configurations are re-assembled from remembered
			// virtual host bytes, clusters and load assignments are
			// published as compact stand-ins: each must encode to the
			// bytes of the full message it stands for.
			gw := wire(gr)
			if gw != wire(wr) {
				return fmt.Sprintf("%s %s: published bytes differ", typ, name)
			}
			// (A route configuration's encoding puts its virtual hosts
			// last, so it is compared decoded.)
			full := xds.Expand(gr)
			if typ != resourcev3.RouteType && gw != wire(full) {
				return fmt.Sprintf("%s %s: published bytes differ from the full message's", typ, name)
			}
			if !proto.Equal(full, xds.Expand(wr)) {
				return fmt.Sprintf("%s %s: published content differs", typ, name)
			}
		}
	}
	return ""
}

func wire(r cachetypes.Resource) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return "marshal error: " + err.Error()
	}
	return string(b)
}
