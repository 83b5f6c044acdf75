package main

import (
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/version"
)

// TestProxyStatusDiffStandalone: `proxy-status ID` compares the real
// controller's per-proxy view (/debug/config_dump?proxyID=) with the real
// proxy's /config_dump. A listener the proxy cannot bind (its port is
// taken) is in what the controller sends and not in what the proxy runs:
// "Listeners Don't Match" with the listener on the controller's side of
// the diff; once the port is free the proxy binds it and all match.
func TestProxyStatusDiffStandalone(t *testing.T) {
	cp := testenv.StartControlPlane(t, "127.0.0.1:0")
	debug := httptest.NewServer(controller.New(logr.Discard(), cp.Server, nil, controller.Options{}).DebugHandler(nil))
	defer debug.Close()
	ctl := strings.TrimPrefix(debug.URL, "http://")
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443, 3306}, NodeID: "gw-1"})
	admin := strings.TrimPrefix(p.Admin.URL, "http://")
	busy, err := net.Listen("tcp", p.Addr(3306))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	yaml, err := os.ReadFile(filepath.Join("testdata", "gateway.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cp.Publish(t, string(yaml))

	var out string
	testenv.WaitFor(t, "the proxy to NACK the listener on a busy port", func() bool {
		var code int
		out, _, code = cli(t, "proxy-status", "--controller", ctl, "-o", "json")
		return code == 0 && strings.Contains(out, "STALE (NACKED)")
	})
	testenv.WaitFor(t, "the proxy to apply clusters, routes and secrets", func() bool {
		out, _, _ = cli(t, "ps", "gw-1", "--controller", ctl, "--admin", admin)
		return strings.Contains(out, "Clusters Match") && strings.Contains(out, "Routes Match") && strings.Contains(out, "Secrets Match")
	})
	if !strings.Contains(out, "Listeners Don't Match") || !strings.Contains(out, "--- Controller Listeners") || !strings.Contains(out, "+++ Proxy Listeners") {
		t.Fatalf("a listener the proxy could not bind should make the listeners differ:\n%s", out)
	}
	// The missing listener is on the controller's side only.
	var minus []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "---") {
			minus = append(minus, l)
		}
		if strings.HasPrefix(l, "+") && !strings.HasPrefix(l, "+++") {
			t.Errorf("the proxy has nothing the controller did not send, yet: %q", l)
		}
	}
	if !strings.Contains(strings.Join(minus, "\n"), `"port_value": 3306`) {
		t.Errorf("the diff should remove the 3306 listener:\n%s", strings.Join(minus, "\n"))
	}
	if !strings.Contains(out, "Routes Match (RDS last loaded at ") {
		t.Errorf("the routes line says when RDS was loaded:\n%s", out)
	}

	busy.Close()
	testenv.WaitFor(t, "the proxy to bind the freed port and everything to match", func() bool {
		out, _, _ = cli(t, "ps", "gw-1", "--controller", ctl, "--admin", admin)
		return strings.Count(out, " Match") == 5 && !strings.Contains(out, "Don't")
	})
	got, _, code := cli(t, "ps", "--controller", ctl)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "gw-1.istio-system ") || strings.Count(lines[1], "SYNCED") != 5 {
		t.Errorf("proxy-status table (NAME as istioctl's pod.namespace, all SYNCED):\n%s", got)
	}

	// Naming: ID.NAMESPACE works as well; an unknown proxy is a clear error.
	if out, _, code := cli(t, "ps", "gw-1.istio-system", "--controller", ctl, "--admin", admin); code != 0 || strings.Contains(out, "Don't") {
		t.Errorf("gw-1.istio-system: exit %d\n%s", code, out)
	}
	// A dump saved from the proxy (istioctl's proxy-status --file).
	saved, err := get(admin, "/config_dump?include_eds")
	if err != nil {
		t.Fatal(err)
	}
	savedFile := filepath.Join(t.TempDir(), "gw-1.json")
	os.WriteFile(savedFile, saved, 0o600)
	if out, errOut, code := cli(t, "ps", "gw-1", "--controller", ctl, "-f", savedFile); code != 0 || strings.Count(out, " Match") != 5 || strings.Contains(out, "Don't") {
		t.Errorf("-f saved dump: exit %d %s\n%s", code, errOut, out)
	}
	if _, errOut, code := cli(t, "ps", "gw-1", "--controller", ctl, "-f", savedFile, "--admin", admin); code != 1 || !strings.Contains(errOut, "not both") {
		t.Errorf("-f and --admin: exit %d %q", code, errOut)
	}
	if out, _, code := cli(t, "ps", "--controller", ctl, "-o", "yaml"); code != 0 || !strings.Contains(out, "id: gw-1") || !strings.Contains(out, "version: 0.1.0") {
		t.Errorf("-o yaml: exit %d\n%s", code, out)
	}
	if _, errOut, code := cli(t, "ps", "nobody", "--controller", ctl, "--admin", admin); code != 1 || !strings.Contains(errOut, "no such proxy") {
		t.Errorf("unknown proxy: exit %d %q", code, errOut)
	}

	// version: client, controller and the proxy's build version.
	out, errOut, code := cli(t, "version", "--controller", ctl)
	if code != 0 || !strings.Contains(out, "client version: "+version.Version) || !strings.Contains(out, "control plane version: "+version.Version) ||
		!strings.Contains(out, "data plane version: 0.1.0 (1 proxies)") {
		t.Errorf("version: exit %d %s\n%s", code, errOut, out)
	}
	if _, errOut, code := cli(t, "version", "--controller", "127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "the control plane") {
		t.Errorf("unreachable controller: exit %d %q", code, errOut)
	}
	if out, errOut, code := cli(t, "version", "--admin", admin); code != 0 || !strings.Contains(out, "data plane version: 0.1.0 (1 proxies)") || strings.Contains(out, "control plane") {
		t.Errorf("version --admin: exit %d %s\n%s", code, errOut, out)
	}
	if out, _, code := cli(t, "version", "--remote=false"); code != 0 || strings.TrimSpace(out) != "client version: "+version.Version {
		t.Errorf("--remote=false: exit %d %q", code, out)
	}

	// bootstrap: istioctl's json, its short summary, and a table.
	out, _, code = cli(t, "pc", "bootstrap", "--admin", admin)
	for _, want := range []string{"Node ID:", "gw-1", "Cluster:", "istio-ingressgateway", "Namespace:", "istio-system", "Envoy Version:", "0.1.0", "xDS:", "xds-grpc", "Static Cluster xds-grpc:", cp.Addr} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("bootstrap table: missing %q (exit %d):\n%s", want, code, out)
		}
	}
	if out, _, code := cli(t, "pc", "bootstrap", "--admin", admin, "-o", "short"); code != 0 || strings.TrimSpace(out) != "Envoy Version: 0.1.0" {
		t.Errorf("bootstrap -o short: exit %d %q", code, out)
	}
	if out, _, code := cli(t, "pc", "bootstrap", "--admin", admin, "-o", "json"); code != 0 || !strings.Contains(out, `"bootstrap": {`) || !strings.Contains(out, `"id": "gw-1"`) {
		t.Errorf("bootstrap -o json: exit %d\n%.400s", code, out)
	}
	if out, _, code := cli(t, "pc", "all", "--admin", admin); code != 0 || !strings.HasPrefix(out, "Envoy Version: 0.1.0\n") {
		t.Errorf("pc all starts with istioctl's Envoy Version line: exit %d\n%.200s", code, out)
	}
}
