package hostile

import (
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/translate"
)

// handshakeTimeout is how long the proxy waits for a TLS ClientHello
// (Envoy's listener filter timeout, fixed at 15 s).
const handshakeTimeout = 15 * time.Second

// publish configures the proxy with the edge defaults, except the
// timeouts: serverTimeout, so that slow clients are cut off within the
// suite's time budget.
func publish(t *testing.T, cp *testenv.ControlPlane, yaml string) {
	t.Helper()
	edge := translate.DefaultEdge()
	edge.RequestHeadersTimeout = translate.Duration{Duration: serverTimeout}
	edge.StreamIdleTimeout = translate.Duration{Duration: serverTimeout}
	edge.IdleTimeout = translate.Duration{Duration: serverTimeout}
	cp.PublishWith(t, yaml, translate.Options{Edge: edge})
}

func proxyOptions() testenv.ProxyOptions {
	return testenv.ProxyOptions{Ports: []uint32{80, 443}}
}
