package xds_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

var ingress = map[string]string{"istio": "ingressgateway"}

// translateSeed binds and translates the seed 001 YAML, optionally edited.
func translateSeed(t *testing.T, edit func(string) string) *translate.Resources {
	t.Helper()
	b, err := os.ReadFile("../gateway/testdata/seed001-three-protocols.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	if edit != nil {
		src = edit(src)
	}
	objs, errs := resource.Decode([]byte(src), "seed001")
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	out := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}})
	p := out.Proxy(ingress)
	if p == nil {
		t.Fatal("no proxy for ingress class")
	}
	tr, err := translate.Translate(p, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func startServer(t *testing.T) (*xds.Server, *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := xds.NewServer(logr.Discard(), gateway.ClassName)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv, conn
}

func node(id string, labels map[string]string) *corev3.Node {
	fields := map[string]any{}
	for k, v := range labels {
		fields[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{xds.MetadataLabels: fields})
	return &corev3.Node{Id: id, Cluster: "istio-ingressgateway", Metadata: md}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func nodeState(srv *xds.Server, id string) (xds.Node, bool) {
	for _, n := range srv.Nodes() {
		if n.ID == id {
			return n, true
		}
	}
	return xds.Node{}, false
}

type fetched struct {
	resp *sotw.Response
	err  error
}

// fetch reads the next response with a deadline.
func fetch(t *testing.T, c sotw.ADSClient) *sotw.Response {
	t.Helper()
	ch := make(chan fetched, 1)
	go func() {
		r, err := c.Fetch()
		ch <- fetched{r, err}
	}()
	select {
	case f := <-ch:
		if f.err != nil {
			t.Fatal(f.err)
		}
		return f.resp
	case <-time.After(10 * time.Second):
		t.Fatal("no response from the xDS server")
	}
	return nil
}

func listenerNames(t *testing.T, r *sotw.Response) []string {
	var names []string
	for _, a := range r.Resources {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		names = append(names, l.Name)
	}
	sort.Strings(names) // a response carries resources in no particular order
	return names
}

func TestADSStateOfTheWorld(t *testing.T) {
	srv, conn := startServer(t)
	ctx := t.Context()
	first, err := srv.Publish(ctx, gateway.ClassName(ingress), translateSeed(t, nil))
	if err != nil {
		t.Fatal(err)
	}

	client := sotw.NewADSClient(ctx, node("gw-1", ingress), resourcev3.ListenerType)
	if err := client.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	resp := fetch(t, client)
	if got := strings.Join(listenerNames(t, resp), ","); got != "0.0.0.0_3306,0.0.0.0_443,0.0.0.0_80" {
		t.Fatalf("listeners = %s", got)
	}
	if err := client.Ack(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACK recorded", func() bool {
		n, ok := nodeState(srv, "gw-1")
		return ok && n.Acked[resourcev3.ListenerType] == first.Versions[resourcev3.ListenerType]
	})
	n, _ := nodeState(srv, "gw-1")
	if n.Class != "istio=ingressgateway" || n.Sent != first.Version() {
		t.Errorf("registry = %+v", n)
	}

	// Publishing identical resources changes nothing and pushes nothing.
	same, err := srv.Publish(ctx, gateway.ClassName(ingress), translateSeed(t, nil))
	if err != nil || same != first {
		t.Fatalf("identical publish: %v, new snapshot %v", err, same != first)
	}

	// Dropping the TCP server pushes a new listener version.
	second, err := srv.Publish(ctx, gateway.ClassName(ingress), translateSeed(t, func(s string) string {
		return strings.Replace(s, "number: 3306\n      protocol: TCP", "number: 3306\n      protocol: HTTP", 1)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if second.Versions[resourcev3.ListenerType] == first.Versions[resourcev3.ListenerType] {
		t.Fatal("listener version did not change")
	}
	resp = fetch(t, client)
	if len(resp.Resources) != 3 {
		t.Fatalf("got %d listeners after the change", len(resp.Resources))
	}
	// NACK it: the server records the reason against the node.
	if err := client.Nack("unsupported field envoy.config.listener.v3.Listener.foo"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NACK recorded", func() bool {
		n, _ := nodeState(srv, "gw-1")
		return strings.Contains(n.Nacked[resourcev3.ListenerType], "unsupported field")
	})
	n, _ = nodeState(srv, "gw-1")
	if n.Acked[resourcev3.ListenerType] != first.Versions[resourcev3.ListenerType] {
		t.Errorf("after NACK the acked version should stay %s, got %s", first.Versions[resourcev3.ListenerType], n.Acked[resourcev3.ListenerType])
	}
}

func TestPublishRejectsInvalidSnapshot(t *testing.T) {
	srv, _ := startServer(t)
	ctx := t.Context()
	class := gateway.ClassName(ingress)
	good, err := srv.Publish(ctx, class, translateSeed(t, nil))
	if err != nil {
		t.Fatal(err)
	}

	bad := translateSeed(t, nil)
	// A negative connect timeout violates Envoy's validation rules.
	bad.Clusters[0] = proto.Clone(bad.Clusters[0]).(*clusterv3.Cluster)
	bad.Clusters[0].ConnectTimeout = durationpb.New(-time.Second)
	_, err = srv.Publish(ctx, class, bad)
	if err == nil || !strings.Contains(err.Error(), "ServiceEntry/default/mysql") || !strings.Contains(err.Error(), "ConnectTimeout") {
		t.Fatalf("error should name the cluster's source and field, got %v", err)
	}
	// A listener whose route configuration is missing is inconsistent.
	missing := translateSeed(t, nil)
	missing.Routes = []*routev3.RouteConfiguration{missing.Routes[0]}
	if _, err := srv.Publish(ctx, class, missing); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("inconsistent snapshot accepted: %v", err)
	}
	cur, err := srv.Snapshot(class)
	if err != nil || cur != good {
		t.Fatalf("previous snapshot must keep serving, got %v (%v)", cur, err)
	}
}

func TestNewClassSignalsController(t *testing.T) {
	srv, conn := startServer(t)
	ctx := t.Context()
	egress := map[string]string{"istio": "egressgateway"}
	client := sotw.NewADSClient(ctx, node("egress-1", egress), resourcev3.ClusterType)
	if err := client.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("a proxy of an unknown class did not signal the controller")
	}
	classes := srv.Classes()
	if len(classes) != 1 || classes[0]["istio"] != "egressgateway" {
		t.Fatalf("classes = %v", classes)
	}
	// Once the class is published the waiting proxy gets its config.
	if _, err := srv.Publish(ctx, gateway.ClassName(egress), translateSeed(t, nil)); err != nil {
		t.Fatal(err)
	}
	if resp := fetch(t, client); len(resp.Resources) != 2 {
		t.Fatalf("got %d clusters", len(resp.Resources))
	}
}

func TestADSDelta(t *testing.T) {
	srv, conn := startServer(t)
	ctx := t.Context()
	class := gateway.ClassName(ingress)
	if _, err := srv.Publish(ctx, class, translateSeed(t, nil)); err != nil {
		t.Fatal(err)
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		ch := make(chan *discoveryv3.DeltaDiscoveryResponse, 1)
		errc := make(chan error, 1)
		go func() {
			r, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			ch <- r
		}()
		select {
		case r := <-ch:
			return r
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("no delta response")
		}
		return nil
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("gw-delta", ingress), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r := recv()
	versions := map[string]string{}
	for _, res := range r.Resources {
		versions[res.Name] = res.Version
	}
	if len(versions) != 2 || r.Nonce == "" {
		t.Fatalf("initial delta response: %d clusters, nonce %q", len(versions), r.Nonce)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.Nonce}); err != nil {
		t.Fatal(err)
	}
	// A DestinationRule for counter changes only counter's cluster: only
	// it is sent again, mysql's is untouched and nothing is removed.
	if _, err := srv.Publish(ctx, class, translateSeed(t, func(s string) string {
		return s + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: counter}\nspec:\n  host: counter\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n"
	})); err != nil {
		t.Fatal(err)
	}
	r2 := recv()
	if len(r2.Resources) != 1 || !strings.Contains(r2.Resources[0].Name, "counter") {
		names := []string{}
		for _, res := range r2.Resources {
			names = append(names, res.Name)
		}
		t.Fatalf("delta update should carry only counter's cluster, got %v", names)
	}
	if r2.Nonce == r.Nonce {
		t.Error("nonce was reused")
	}
	for _, res := range r2.Resources {
		if versions[res.Name] == res.Version {
			t.Errorf("unchanged cluster %s was sent again", res.Name)
		}
	}
	if len(r2.RemovedResources) != 0 {
		t.Errorf("clusters still in use were removed: %v", r2.RemovedResources)
	}
	// NACK the delta response; the registry records it.
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r2.Nonce,
		ErrorDetail: &rpcstatus.Status{Message: "cluster rejected"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delta NACK recorded", func() bool {
		n, _ := nodeState(srv, "gw-delta")
		return n.Nacked[resourcev3.ClusterType] != ""
	})
}

// TestColdSnapshotValidatesInParallel publishes a first snapshot large
// enough to be prepared in parallel: a single invalid message among
// hundreds is still found and named.
func TestColdSnapshotValidatesInParallel(t *testing.T) {
	srv, _ := startServer(t)
	class := gateway.ClassName(ingress)
	many := func(bad int) *translate.Resources {
		res := translateSeed(t, nil)
		vhosts := res.Routes[0].VirtualHosts
		rc := proto.Clone(res.Routes[0]).(*routev3.RouteConfiguration)
		for i := range 400 {
			vh := proto.Clone(vhosts[0]).(*routev3.VirtualHost)
			vh.Name, vh.Domains = fmt.Sprintf("host-%d:80", i), []string{fmt.Sprintf("host-%d.example.com", i)}
			if i == bad {
				vh.Routes[0].Match = &routev3.RouteMatch{} // no path specifier
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
		res.Routes[0] = rc
		return res
	}
	if _, err := srv.Publish(t.Context(), class, many(317)); err == nil || !strings.Contains(err.Error(), "host-317") {
		t.Fatalf("the invalid virtual host should be named, got %v", err)
	}
	if _, err := srv.Snapshot(class); err == nil {
		t.Fatal("an invalid first snapshot was published")
	}
	snap, err := srv.Publish(t.Context(), class, many(-1))
	if err != nil {
		t.Fatal(err)
	}
	name := translateSeed(t, nil).Routes[0].Name
	if got := len(snap.Originals(resourcev3.RouteType)[name].(*routev3.RouteConfiguration).VirtualHosts); got < 400 {
		t.Fatalf("published %d virtual hosts", got)
	}
}
