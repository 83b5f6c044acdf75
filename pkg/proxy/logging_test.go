package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/pkg/proxy"
)

// /logging works per logger, with Envoy's names, as Envoy's does.
func TestLoggingEndpointPerLogger(t *testing.T) {
	levels := logging.NewLevels(zapcore.InfoLevel)
	p := proxy.New(proxy.Options{NodeID: "n", XDSAddress: "127.0.0.1:1", Logging: levels}, logr.Discard())
	srv := httptest.NewServer(p.AdminHandler())
	defer srv.Close()
	do := func(method, query string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+"/logging"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	level := func(body, name string) string {
		for _, l := range strings.Split(body, "\n") {
			if n, v, ok := strings.Cut(strings.TrimSpace(l), ": "); ok && n == name {
				return v
			}
		}
		return ""
	}

	code, body := do("GET", "")
	for _, name := range []string{"admin", "config", "connection", "http", "router", "upstream", "xds", "secret"} {
		if level(body, name) != "info" {
			t.Errorf("GET /logging: %s not listed at info:\n%s", name, body)
		}
	}
	if code != 200 || !strings.HasPrefix(body, "active loggers:\n") {
		t.Errorf("GET /logging: %d %q", code, body)
	}

	if code, body = do("POST", "?router=debug"); code != 200 || level(body, "router") != "debug" || level(body, "http") != "info" {
		t.Errorf("?router=debug must change only router: %d\n%s", code, body)
	}
	if code, body = do("POST", "?routr=debug"); code != 400 || !strings.Contains(body, `unknown logger "routr"`) || level(body, "router") != "debug" {
		t.Errorf("unknown logger: %d\n%s", code, body)
	}
	if code, body = do("POST", "?http=loud"); code != 400 || !strings.Contains(body, "unknown log level") || level(body, "http") != "info" {
		t.Errorf("unknown level: %d\n%s", code, body)
	}
	if code, _ = do("POST", "?http=debug&nope=info"); code != 400 || levels.Levels()["http"] != "info" {
		t.Errorf("a request with one bad name changed something: %d %v", code, levels.Levels())
	}
	if code, body = do("POST", "?paths=http:debug,xds:trace"); code != 200 || level(body, "http") != "debug" || level(body, "xds") != "trace" {
		t.Errorf("?paths=: %d\n%s", code, body)
	}
	if code, body = do("POST", "?level=warning"); code != 200 || level(body, "router") != "warning" || level(body, "xds") != "warning" {
		t.Errorf("?level=warning must change all: %d\n%s", code, body)
	}
	if code, _ = do("GET", "?level=debug"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET with a change: %d, want 405", code)
	}
}
