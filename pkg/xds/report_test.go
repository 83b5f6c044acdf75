package xds

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/internal/poll"
)

type reports struct {
	mu  sync.Mutex
	all []ProxyReport
}

func (r *reports) add(p ProxyReport) {
	r.mu.Lock()
	r.all = append(r.all, p)
	r.mu.Unlock()
}

func (r *reports) get() []ProxyReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ProxyReport(nil), r.all...)
}

// The report hook hears a proxy's NACK once per change, the ACK that ends
// it, and the disconnect that makes it moot, over a real ADS stream.
func TestReportHookHearsNACKsAndTheirEnd(t *testing.T) {
	s := NewServer(logr.Discard(), func(l map[string]string) string { return "class-" + l["istio"] })
	rec := &reports{}
	s.OnReport(rec.add)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"LABELS": map[string]any{"istio": "ingressgateway"}})
	lds := resourcev3.ListenerType
	send := func(r *discoveryv3.DeltaDiscoveryRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p1", Metadata: md}, TypeUrl: lds})
	nack := &rpcstatus.Status{Code: 3, Message: "listener 0.0.0.0_80: cannot bind 0.0.0.0:80: address already in use"}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: lds, ResponseNonce: "1", ErrorDetail: nack})
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: lds, ResponseNonce: "2", ErrorDetail: nack}) // the same again: no news
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: lds, ResponseNonce: "2"})
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: lds, ResponseNonce: "3", ErrorDetail: nack})
	poll.Until(t, "three reports", func() bool { return len(rec.get()) >= 3 })
	scancel() // the proxy leaves with a NACK standing
	poll.Until(t, "the disconnect to end the NACK", func() bool { return len(rec.get()) >= 4 })

	got := rec.get()
	want := []string{nack.Message, "", nack.Message, ""}
	if len(got) != len(want) {
		t.Fatalf("reports %+v, want details %q", got, want)
	}
	for i, r := range got {
		if r.Node != "p1" || r.Class != "class-ingressgateway" || r.TypeURL != lds || r.Detail != want[i] {
			t.Errorf("report %d = %+v, want detail %q", i, r, want[i])
		}
	}
}

// go-control-plane's warnings and errors must show at the default level;
// its per-request chatter must not.
func TestCacheLoggerLevels(t *testing.T) {
	var lines []string
	l := cacheLogger{funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0})}
	l.Debugf("debug %d", 1)
	l.Infof("info %d", 2)
	l.Warnf("warn %d", 3)
	l.Errorf("error %d", 4)
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "warn 3") || !strings.Contains(all, "error 4") {
		t.Errorf("warnings or errors hidden at the default level:\n%s", all)
	}
	if strings.Contains(all, "debug 1") || strings.Contains(all, "info 2") {
		t.Errorf("chatter shown at the default level:\n%s", all)
	}
}
