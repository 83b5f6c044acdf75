package translate_test

import (
	"path/filepath"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/translate"
)

// accessLogsOf returns every HCM's and tcp_proxy's access_log.
func accessLogsOf(t *testing.T, res *translate.Resources) [][]*accesslogv3.AccessLog {
	t.Helper()
	var out [][]*accesslogv3.AccessLog
	for _, l := range res.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				m, err := f.GetTypedConfig().UnmarshalNew()
				if err != nil {
					t.Fatal(err)
				}
				switch c := m.(type) {
				case *hcmv3.HttpConnectionManager:
					out = append(out, c.AccessLog)
				case *tcpproxyv3.TcpProxy:
					out = append(out, c.AccessLog)
				}
			}
		}
	}
	return out
}

// TestAccessLogGolden translates meshConfig's access log options into
// HCM and tcp_proxy access_log, checks them against golden files, Envoy's
// validation rules, and that the edge proxy accepts (compiles) them.
func TestAccessLogGolden(t *testing.T) {
	in := "testdata/seed001-three-protocols.in.yaml"
	cases := []struct {
		name    string
		al      *translate.AccessLog
		loggers int // access_log entries per filter
		// telemetry is a Telemetry resource's selection (replaces al).
		telemetry *translate.AccessLogging
	}{
		{"default-stdout", nil, 1, nil},
		{"off", &translate.AccessLog{File: ""}, 0, nil},
		{"file-default-format", &translate.AccessLog{File: "/var/log/portico/access.log"}, 1, nil},
		{"text-format", &translate.AccessLog{File: "/dev/stdout", Encoding: "TEXT",
			Format: `[%START_TIME%] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):64% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`}, 1, nil},
		{"json-istio-default", &translate.AccessLog{File: "/dev/stdout", Encoding: "JSON"}, 1, nil},
		{"json-custom", &translate.AccessLog{File: "/dev/stdout", Encoding: "JSON",
			Format: `{"when":"%START_TIME%","code":"%RESPONSE_CODE%","ua":"%REQ(USER-AGENT):32%"}`}, 1, nil},
		{"telemetry-off", &translate.AccessLog{File: "/dev/stdout"}, 0, &translate.AccessLogging{}},
		{"telemetry-filtered", &translate.AccessLog{File: "/dev/stdout"}, 2, &translate.AccessLogging{Logs: []*translate.AccessLog{
			{File: "/dev/stdout", Filter: "response.code >= 400"},
			{File: "/var/log/errors.json", Labels: map[string]string{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"},
				Filter: "response.code >= 500 || request.headers['x-debug'] == 'true'"},
		}}},
	}
	p := loadProxy(t, in)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.al != nil {
				if err := c.al.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			res, err := translate.Translate(p, translate.Options{AccessLog: c.al, AccessLogging: c.telemetry})
			if err != nil {
				t.Fatal(err)
			}
			validateAll(t, res)
			logs := accessLogsOf(t, res)
			if len(logs) < 2 {
				t.Fatalf("want HTTP and TCP filters in %s, found %d", in, len(logs))
			}
			for _, l := range logs {
				if len(l) != c.loggers {
					t.Errorf("%d access loggers, want %d", len(l), c.loggers)
				}
				if _, err := accesslog.FromEnvoy(l); err != nil {
					t.Errorf("the edge proxy rejects the access log: %v", err)
				}
			}
			for _, l := range res.Listeners {
				if err := supported.Check(l); err != nil {
					t.Errorf("listener %s: %v", l.Name, err)
				}
			}
			golden.Check(t, filepath.Join("testdata", "accesslog", c.name+".out.yaml"), dump(t, &translate.Resources{Listeners: res.Listeners}))
		})
	}
}

func TestAccessLogValidate(t *testing.T) {
	for _, c := range []struct {
		al   translate.AccessLog
		want string
	}{
		{translate.AccessLog{File: "/dev/stdout", Encoding: "XML"}, "accessLogEncoding"},
		{translate.AccessLog{File: "/dev/stdout", Encoding: "JSON", Format: "%START_TIME%"}, "must be a JSON object"},
		{translate.AccessLog{File: "/dev/stdout", Encoding: "JSON", Format: `{"a":{"b":"c"}}`}, `key "a"`},
		{translate.AccessLog{File: "/dev/stdout", Encoding: "JSON", Format: `{"a":1}`}, `key "a"`},
	} {
		err := c.al.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.al, err, c.want)
		}
	}
}
