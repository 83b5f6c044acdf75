package hostile

import (
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// publish configures the proxy. The slow cases need the proxy's timeouts
// set to serverTimeout.
func publish(t *testing.T, cp *testenv.ControlPlane, yaml string) {
	t.Helper()
	cp.Publish(t, yaml)
}

func proxyOptions() testenv.ProxyOptions {
	return testenv.ProxyOptions{Ports: []uint32{80, 443}}
}
