package controller

import (
	"context"
	"sync"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/xds"
)

// countingSink counts the builds that reached status.
type countingSink struct {
	mu     sync.Mutex
	builds int
}

func (s *countingSink) Update(context.Context, *gateway.Result) {
	s.mu.Lock()
	s.builds++
	s.mu.Unlock()
}

func (s *countingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.builds
}

// A wake-up signal can outlive the snapshot it announced: Update (or a
// proxy report) stores pending, the build loop takes it on an earlier
// signal, and the later signal finds pending empty. The loop must keep
// its last snapshot then, so that later proxy reports still rebuild; it
// used to take the empty one, and a Gateway's status then kept saying a
// port was in use long after the proxy had bound it.
func TestRunKeepsItsSnapshotWhenASignalOutlivesIt(t *testing.T) {
	sink := &countingSink{}
	c := New(logr.Discard(), xds.NewServer(logr.Discard(), gateway.ClassName), sink, Options{})
	res := decodeYAML(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]`)

	// The interleaving, made deterministic: the loop already built res
	// (last), and the signal of the Update it took is still queued.
	c.last = res
	c.updates <- struct{}{}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	poll.Until(t, "the stale signal's build", func() bool { return sink.count() >= 1 })
	before := sink.count()
	c.onProxyReport(xds.ProxyReport{Node: "edge-1", TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Detail: "listener 0.0.0.0_81: cannot bind"})
	poll.Until(t, "a build after the proxy's report", func() bool { return sink.count() > before })
}
