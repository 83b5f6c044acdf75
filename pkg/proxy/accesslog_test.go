package proxy_test

// Access logs configured the Istio way (meshConfig accessLogFile,
// accessLogEncoding, accessLogFormat), through the real translator, xDS
// stream and proxy, over real sockets.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/translate"
)

// startEdgeWithAccessLog runs a proxy whose listeners carry al.
func startEdgeWithAccessLog(t *testing.T, al *translate.AccessLog) (*testenv.Proxy, *testenv.ControlPlane, *testenv.Recorder) {
	t.Helper()
	rec := testenv.StartRecorder(t)
	cp := testenv.StartControlPlane(t, "")
	cp.PublishWith(t, edgeConfig(rec.Port), translate.Options{Edge: translate.DefaultEdge(), AccessLog: al})
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	return p, cp, rec
}

// hostileUA has what the proxy lets through in a header value (control
// bytes other than tab are refused with 400): quotes, backslashes, a tab,
// invalid UTF-8.
const hostileUA = "evil\"q\"\\ \t\xff"

func TestAccessLogJSONToFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	p, _, _ := startEdgeWithAccessLog(t, &translate.AccessLog{File: path, Encoding: "JSON"})
	status, _ := rawExchange(t, p.Addr(80), "GET /json?x=1 HTTP/1.1\r\nHost: a.example.com\r\nUser-Agent: "+hostileUA+"\r\nX-Request-Id: rid-42\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	var line []byte
	testenv.WaitFor(t, "the JSON access log line in the file", func() bool {
		p.Proxy.Flush()
		b, _ := os.ReadFile(path)
		line = b
		return strings.Contains(string(b), "rid-42")
	})
	if n := strings.Count(string(line), "\n"); n != 1 {
		t.Fatalf("%d lines, want 1: %q", n, line)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("not JSON: %q: %v", line, err)
	}
	want := map[string]any{
		"method": "GET", "path": "/json?x=1", "protocol": "HTTP/1.1", "response_code": 200.0, "response_flags": nil,
		"request_id": "rid-42", "authority": "a.example.com", "user_agent": strings.ToValidUTF8(hostileUA, "\ufffd"),
		"upstream_cluster": "outbound|80||app.default.svc.cluster.local", "requested_server_name": nil,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if s, _ := m["downstream_remote_address"].(string); !strings.HasPrefix(s, "127.0.0.1:") {
		t.Errorf("downstream_remote_address = %#v", m["downstream_remote_address"])
	}
	if s, _ := m["upstream_host"].(string); !strings.HasPrefix(s, "127.0.0.1:") {
		t.Errorf("upstream_host = %#v", m["upstream_host"])
	}
	if _, ok := m["duration"].(float64); !ok {
		t.Errorf("duration = %#v, want a number", m["duration"])
	}
	if len(m) != len(translate.IstioJSONFormat) {
		t.Errorf("%d keys, want Istio's %d", len(m), len(translate.IstioJSONFormat))
	}
}

func TestAccessLogTextFormatToStdout(t *testing.T) {
	format := `%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):6% %RESPONSE_CODE% %UPSTREAM_CLUSTER% ` +
		`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %RESP(SERVER)% %RESP(X-NOPE)% "%REQ(USER-AGENT)%" %START_TIME(%Y)%`
	p, _, _ := startEdgeWithAccessLog(t, &translate.AccessLog{File: "/dev/stdout", Format: format})
	req, _ := http.NewRequest("GET", p.URL(80)+"/textformat", nil)
	req.Host = "a.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	server := resp.Header.Get("server")
	if server == "" {
		t.Fatal("no server header to log")
	}
	status, _ := rawExchange(t, p.Addr(80), "GET /evil HTTP/1.1\r\nHost: a\r\nUser-Agent: "+hostileUA+"\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	testenv.WaitFor(t, "two access log lines", func() bool {
		p.Proxy.Flush()
		return strings.Count(p.Log.String(), "\n") >= 2
	})
	lines := strings.Split(strings.TrimSuffix(p.Log.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), lines)
	}
	year := strings.Fields(lines[0])[8]
	wantFirst := "GET /textf 200 outbound|80||app.default.svc.cluster.local 127.0.0.1 " + server + ` - "Go-http-client/1.1" ` + year
	if lines[0] != wantFirst {
		t.Errorf("line\n%q, want\n%q", lines[0], wantFirst)
	}
	wantEvil := `"evil\x22q\x22\x5C \x09` + "\xff" + `"`
	if !strings.Contains(lines[1], wantEvil) {
		t.Errorf("hostile user agent not escaped: %q, want it to contain %q", lines[1], wantEvil)
	}
	for _, c := range []byte(lines[1]) {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("control byte %#x in %q", c, lines[1])
		}
	}
}

// TestAccessLogUnknownOperatorIsNACKed: a format the proxy cannot honour
// is rejected by name and the last good listener keeps serving, still
// logging in its format.
func TestAccessLogUnknownOperatorIsNACKed(t *testing.T) {
	p, cp, rec := startEdgeWithAccessLog(t, &translate.AccessLog{File: "/dev/stdout", Format: "good %REQ(:PATH)%"})
	for _, f := range []struct{ format, want string }{
		{"%DYNAMIC_METADATA(istio:x)%", "unsupported command operator %DYNAMIC_METADATA%"},
		{"%REQ(X-A):0%", "bad length"},
	} {
		tr, _ := testenv.BuildWith(t, edgeConfig(rec.Port), testenv.Ingress, translate.Options{Edge: translate.DefaultEdge(),
			AccessLog: &translate.AccessLog{File: "/dev/stdout", Format: f.format}})
		cp.PublishResources(t, tr)
		testenv.WaitFor(t, "a NACK naming "+f.want, func() bool { return strings.Contains(nacked(cp, resourcev3.ListenerType), f.want) })
	}
	status, _ := rawExchange(t, p.Addr(80), "GET /still HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d after the NACK", status)
	}
	testenv.WaitFor(t, "the last good format's line", func() bool {
		p.Proxy.Flush()
		return strings.Contains(p.Log.String(), "good /still\n")
	})
}

// TestAccessLogTCPProxy: a TCP route's connections are logged with the
// configured format once they close — the cluster, the upstream host and
// the bytes each way as the client and the echo backend saw them.
func TestAccessLogTCPProxy(t *testing.T) {
	echo := startEcho(t)
	path := filepath.Join(t.TempDir(), "tcp.log")
	cp := testenv.StartControlPlane(t, "")
	cp.PublishWith(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 3306, name: mysql, protocol: TCP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp: [{route: [{destination: {host: mysql.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.default.svc.cluster.local]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp: %d}}]
`, echo.Port), translate.Options{Edge: translate.DefaultEdge(), AccessLog: &translate.AccessLog{
		File: path, Format: "tcp %UPSTREAM_CLUSTER% up=%UPSTREAM_HOST% in=%BYTES_RECEIVED% out=%BYTES_SENT% flags=%RESPONSE_FLAGS%\n"}})
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{3306}})
	p.WaitReady(t)

	conn, err := net.Dial("tcp", p.Addr(3306))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	const payload = "hello over tcp"
	if _, err := conn.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != payload {
		t.Fatalf("echo: %q, %v", got, err)
	}
	conn.Close()

	var line string
	testenv.WaitFor(t, "the TCP access log line in the file", func() bool {
		p.Proxy.Flush()
		b, _ := os.ReadFile(path)
		line = string(b)
		return strings.HasSuffix(line, "\n")
	})
	want := fmt.Sprintf("tcp outbound|3306||mysql.default.svc.cluster.local up=127.0.0.1:%d in=%d out=%d flags=-\n", echo.Port, len(payload), len(payload))
	if line != want {
		t.Errorf("access log:\n got %q\nwant %q", line, want)
	}
}
