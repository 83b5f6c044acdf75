package xds

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestPiecedResponsesEqualMarshalled: a delta response whose route
// configurations the codec sends from their parts decodes to the same
// message as the response with every value marshalled, for published
// route configurations (compact virtual hosts), full ones, ones with
// other fields and none, alone or several to a response; and the codec
// leaves every other message to gRPC's proto codec byte for byte.
func TestPiecedResponsesEqualMarshalled(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	rng := rand.New(rand.NewPCG(5, 19))
	var published, full []*routev3.RouteConfiguration
	for _, o := range []scale.Options{{VirtualServices: 30, Gateways: 1}, {VirtualServices: 12}} {
		res, err := o.Resources()
		if err != nil {
			t.Fatal(err)
		}
		out, err := translate.Translate(gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress), translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		full = append(full, out.Routes...)
		snap, _, err := NewSnapshot(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range snap.Resources[cachev3.GetResponseType(resourcev3.RouteType)].Items {
			published = append(published, r.Resource.(*routev3.RouteConfiguration))
		}
	}
	compactSeen := false
	for _, rc := range published {
		for _, vh := range rc.VirtualHosts {
			compactSeen = compactSeen || isCompact(vh)
		}
	}
	if !compactSeen || len(full) == 0 {
		t.Fatalf("no compact virtual hosts among %d published route configurations", len(published))
	}
	// Unknown bytes beside other fields: not a stand-in, whose fields
	// would be lost if it were sent as one.
	mixed := &routev3.VirtualHost{Name: "mixed", Domains: []string{"y"}}
	mixed.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1))
	extra := &routev3.RouteConfiguration{Name: "extra", ValidateClusters: wrapperspb.Bool(true), InternalOnlyHeaders: []string{"x-internal"},
		VirtualHosts: []*routev3.VirtualHost{{Name: "plain", Domains: []string{"x"}}, {}, mixed}}
	candidates := append(append(append([]*routev3.RouteConfiguration{}, published...), full...), extra, &routev3.RouteConfiguration{})

	codec := newServerCodec(&pieceTable{})
	for step := range 200 {
		var items []deltaItem
		for range 1 + rng.IntN(3) {
			rc := candidates[rng.IntN(len(candidates))]
			items = append(items, deltaItem{name: rc.Name, resource: rc, version: "v" + rc.Name})
		}
		req := &cachev3.DeltaRequest{TypeUrl: resourcev3.RouteType}
		build := func(pieces *pieceTable) *discoveryv3.DeltaDiscoveryResponse {
			d := &deltaResponse{req: req, version: "7", resources: items, removed: []string{"gone"}, pieces: pieces}
			out, err := d.GetDeltaDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			out.Nonce = "3"
			return out
		}
		want := build(nil)
		pieced := build(codec.pieces)
		sent, err := codec.Marshal(pieced)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		got := &discoveryv3.DeltaDiscoveryResponse{}
		if err := proto.Unmarshal(sent.Materialize(), got); err != nil {
			t.Fatalf("step %d: the pieced response does not decode: %v", step, err)
		}
		sent.Free() // as gRPC does once it is sent: the next step may reuse it
		// Values compare as messages: the parts come in another field
		// order than deterministic marshalling's.
		for _, d := range []*discoveryv3.DeltaDiscoveryResponse{got, want} {
			for _, r := range d.Resources {
				rc := &routev3.RouteConfiguration{}
				if err := proto.Unmarshal(r.Resource.Value, rc); err != nil {
					t.Fatalf("step %d: %s: %v", step, r.Name, err)
				}
				if r.Resource.Value, err = (proto.MarshalOptions{Deterministic: true}).Marshal(rc); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !proto.Equal(got, want) {
			t.Fatalf("step %d: pieced response differs from the marshalled one", step)
		}
		for i, r := range pieced.Resources {
			v, err := codec.pieces.value(r.Resource)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v, mustMarshal(t, items[i].resource)) {
				t.Fatalf("step %d: the table's value of %s is not its encoding", step, r.Name)
			}
		}
	}

	// Anything else is the proto codec's, byte for byte.
	other := []proto.Message{
		&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{"a"}},
		&discoveryv3.DiscoveryResponse{VersionInfo: "1", TypeUrl: resourcev3.ClusterType},
		resp(t, nil, full[0]),
	}
	for _, m := range other {
		got, err := codec.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("%T: not the proto codec's bytes", m)
		}
	}
}

// value returns the encoding of a's value: its own, or its route
// configuration's from the table.
func (t *pieceTable) value(a *anypb.Any) ([]byte, error) {
	rc, ok := t.get(a)
	if !ok {
		return a.GetValue(), nil
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(rc)
}

func resp(t *testing.T, pieces *pieceTable, rc *routev3.RouteConfiguration) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	d := &deltaResponse{req: &cachev3.DeltaRequest{TypeUrl: resourcev3.RouteType}, version: "1",
		resources: []deltaItem{{name: rc.Name, resource: rc, version: "1"}}, pieces: pieces}
	out, err := d.GetDeltaDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustMarshal(t *testing.T, r cachetypes.Resource) []byte {
	t.Helper()
	b, err := cachev3.MarshalResource(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPieceTableForgetsCollectedResponses: the table holds a route
// configuration only while the response's Any lives.
func TestPieceTableForgetsCollectedResponses(t *testing.T) {
	table := &pieceTable{}
	rc := &routev3.RouteConfiguration{Name: "r"}
	for range 100 {
		resp(t, table, rc)
	}
	count := func() int {
		n := 0
		table.m.Range(func(any, any) bool { n++; return true })
		return n
	}
	if n := count(); n != 100 {
		t.Fatalf("table holds %d entries, want 100", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("table still holds %d entries of collected responses", count())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSendBufferKeepsTheLastBufferReturned(t *testing.T) {
	var p sendBuffer
	a := p.Get(100)
	if len(*a) != 100 || cap(*a) < 100+100/8 {
		t.Fatalf("new buffer: len %d cap %d, want 100 and room to grow", len(*a), cap(*a))
	}
	b := p.Get(50) // a is out: a new one
	if &(*a)[0] == &(*b)[0] {
		t.Fatal("a buffer in use was handed out again")
	}
	p.Put(b)
	p.Put(a) // the last returned is kept
	if c := p.Get(110); &(*c)[0] != &(*a)[0] || len(*c) != 110 {
		t.Fatalf("the free buffer was not reused (len %d)", len(*c))
	}
	// Nothing free now: a request gets a new buffer.
	if d := p.Get(10); &(*d)[0] == &(*a)[0] {
		t.Fatal("a buffer in use was handed out again")
	}
	// A free buffer too small is not handed out, nor dropped.
	p.Put(b)
	if d := p.Get(1000); &(*d)[0] == &(*b)[0] || len(*d) != 1000 {
		t.Fatal("a free buffer too small was handed out")
	}
	if e := p.Get(10); &(*e)[0] != &(*b)[0] {
		t.Fatal("the free buffer was dropped by a request it could not serve")
	}
	// A smaller buffer returned last replaces a larger one: the pool
	// shrinks with the configuration.
	p.Put(a)
	p.Put(b)
	if f := p.Get(10); &(*f)[0] != &(*b)[0] {
		t.Fatal("the last buffer returned was not the one kept")
	}
}

// TestSourcesReadsPackedMetadata: translation emits metadata encoded; the
// error naming a resource that could not be published still names the
// resources it came from.
func TestSourcesReadsPackedMetadata(t *testing.T) {
	p := &ir.Proxy{Clusters: []*ir.Cluster{{
		Name: "outbound|80||web.default.svc.cluster.local", Service: "web.default.svc.cluster.local", Discovery: ir.DiscoveryEDS,
		Sources: []ir.Ref{{Kind: "DestinationRule", Namespace: "default", Name: "web"}},
	}}}
	tr, err := translate.Translate(p, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Clusters) != 1 {
		t.Fatalf("%d clusters", len(tr.Clusters))
	}
	if got := sources(tr.Clusters[0]); got != "DestinationRule/default/web" {
		t.Errorf("sources = %q, want DestinationRule/default/web", got)
	}
}
