package controller_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/provider/file"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/xds"
)

type sink struct {
	mu   sync.Mutex
	last []*status.Status
}

func (s *sink) Update(_ context.Context, r *gateway.Result) {
	s.mu.Lock()
	s.last = r.Statuses
	s.mu.Unlock()
}

func (s *sink) find(kind, name string) *status.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.last {
		if st.Key.Kind == kind && st.Key.Name == name {
			return st
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

// TestStandalonePipeline runs what `gateway-controller --standalone` runs
// (file provider, controller, xDS server) on the seed 001 YAML and drives
// it with go-control-plane's ADS client, then edits a file and sees the
// change arrive.
func TestStandalonePipeline(t *testing.T) {
	dir := t.TempDir()
	seed, err := os.ReadFile("../gateway/testdata/seed001-three-protocols.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "seed001.yaml")
	if err := os.WriteFile(path, seed, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	labels := map[string]string{"istio": "ingressgateway"}
	server := xds.NewServer(logr.Discard(), gateway.ClassName)
	st := &sink{}
	reg := prometheus.NewRegistry()
	ctrl := controller.New(logr.Discard(), server, st, controller.Options{StaticClasses: []map[string]string{labels}, Registerer: reg})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	run(func() { server.Serve(ctx, lis) })
	run(func() { ctrl.Run(ctx) })
	run(func() {
		file.New(dir, logr.Discard(), file.Options{Holdoff: 20 * time.Millisecond}).Run(ctx, func(r *resource.Resources) { ctrl.Update(r) })
	})
	defer wg.Wait()
	defer cancel()
	select {
	case <-ctrl.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("the controller never built")
	}

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	md, _ := structpb.NewStruct(map[string]any{"LABELS": map[string]any{"istio": "ingressgateway"}})
	node := &corev3.Node{Id: "ingress-1", Metadata: md}
	fetch := func(c sotw.ADSClient) *sotw.Response {
		ch := make(chan *sotw.Response, 1)
		go func() {
			r, err := c.Fetch()
			if err != nil {
				close(ch)
				return
			}
			ch <- r
		}()
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatal("fetch failed")
			}
			return r
		case <-time.After(15 * time.Second):
			t.Fatal("no response")
		}
		return nil
	}
	lds := sotw.NewADSClient(ctx, node, resourcev3.ListenerType)
	if err := lds.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	if n := len(fetch(lds).Resources); n != 3 {
		t.Fatalf("seed 001 should give 3 listeners (80, 443, 3306), got %d", n)
	}
	lds.Ack()

	// Every resource has a status; the gateway and both VirtualServices are accepted.
	for _, k := range [][2]string{{"Gateway", "default-gateway"}, {"VirtualService", "counter"}, {"VirtualService", "mysql"}} {
		s := st.find(k[0], k[1])
		if s == nil || s.Condition(status.Accepted).Status != "True" || s.ObservedGeneration != 1 {
			t.Fatalf("%s %s status: %+v", k[0], k[1], s)
		}
	}

	// Edit the VirtualService's host; the route configuration follows.
	edited := strings.Replace(string(seed), "counter.lab.example.com", "counter.new.example.com", 1)
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new host in the built configuration", func() bool {
		s := ctrl.State()
		for _, p := range s.Result.Proxies {
			for _, rc := range p.RouteConfigs {
				for _, vh := range rc.VirtualHosts {
					if vh.Name == "counter.new.example.com:80" {
						return true
					}
				}
			}
		}
		return false
	})
	rds := sotw.NewADSClient(ctx, node, resourcev3.RouteType)
	if err := rds.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range fetch(rds).Resources {
		rc := &routev3.RouteConfiguration{}
		a.UnmarshalTo(rc)
		for _, vh := range rc.VirtualHosts {
			if vh.Name == "counter.new.example.com:80" {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("the edited host did not reach the ADS client")
	}
	if s := st.find("VirtualService", "counter"); s.ObservedGeneration != 2 {
		t.Errorf("observedGeneration after an edit = %d, want 2", s.ObservedGeneration)
	}

	// A broken edit is reported and the last good version keeps serving.
	if err := os.WriteFile(path, []byte(strings.Replace(edited, "prefix: /", "prefx: /", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the parse error on the VirtualService's status", func() bool {
		s := st.find("VirtualService", "counter")
		return s != nil && len(s.Messages) > 0 && strings.Contains(s.Messages[0].Message, "prefx")
	})

	// Debug endpoints.
	srv := httptest.NewServer(ctrl.DebugHandler(reg))
	defer srv.Close()
	for path, want := range map[string]string{
		"/debug/ir":          "counter.new.example.com:80",
		"/debug/status":      "StaleSpec",
		"/debug/proxies":     "ingress-1",
		"/debug/config_dump": "RoutesConfigDump",
		"/metrics":           "portico_build_duration_seconds",
		"/readyz":            "ok",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, want %q in:\n%.400s", path, resp.StatusCode, want, b)
		}
		// The published virtual hosts and clusters are compact
		// stand-ins: the dump must show their content, not only names.
		if path == "/debug/config_dump" {
			for _, want := range []string{`"domains"`, "counter.new.example.com", `"connect_timeout"`} {
				if !strings.Contains(string(b), want) {
					t.Errorf("%s: want %q in:\n%.2000s", path, want, b)
				}
			}
		}
	}
}
