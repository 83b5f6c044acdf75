package hcm

import (
	"net/netip"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

func filter(t *testing.T, name string, m proto.Message) *hcmv3.HttpFilter {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

func TestCompileKeepsFilterOrder(t *testing.T) {
	rb := filter(t, "envoy.filters.http.rbac", &httprbacv3.RBAC{Rules: &rbacv3.RBAC{}})
	rl := filter(t, "envoy.filters.http.local_ratelimit", &lrlv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"})
	fault := filter(t, "envoy.filters.http.fault", &faultv3.HTTPFault{})
	cors := filter(t, "envoy.filters.http.cors", &corsv3.Cors{})
	router := filter(t, "envoy.filters.http.router", &routerv3.Router{})
	rds := &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r"}}
	kinds := func(c *Config) string {
		var b strings.Builder
		for _, s := range c.Steps {
			switch s.Kind {
			case StepFault:
				b.WriteString("F")
			case StepCORS:
				b.WriteString("C")
			default:
				b.WriteString(s.Factory.Name()[len("envoy.filters.http."):][:2])
			}
		}
		return b.String()
	}
	for _, c := range []struct {
		filters []*hcmv3.HttpFilter
		want    string
	}{
		{[]*hcmv3.HttpFilter{fault, cors, router}, "FC"},
		{[]*hcmv3.HttpFilter{rb, rb, rl, fault, cors, router}, "rbrbloFC"},
		{[]*hcmv3.HttpFilter{cors, rl, fault, rb, router}, "CloFrb"},
		{[]*hcmv3.HttpFilter{cors, router}, "FC"}, // a route's own fault applies without the filter, as before
	} {
		cfg, err := Compile(&hcmv3.HttpConnectionManager{StatPrefix: "p", RouteSpecifier: rds, HttpFilters: c.filters})
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(cfg); got != c.want {
			t.Errorf("steps %s, want %s", got, c.want)
		}
	}
	for _, bad := range [][]*hcmv3.HttpFilter{
		{router, rb},
		{rb},
		{filter(t, "envoy.filters.http.ext_authz", &routerv3.Router{}), router},
		{filter(t, "envoy.filters.http.rbac", &httprbacv3.RBAC{}), router}, // no rules
	} {
		if _, err := Compile(&hcmv3.HttpConnectionManager{StatPrefix: "p", RouteSpecifier: rds, HttpFilters: bad}); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// TestClientAddr: Envoy's trusted client address for every combination
// of use_remote_address and xff_num_trusted_hops.
func TestClientAddr(t *testing.T) {
	peer := "10.0.0.9"
	for _, c := range []struct {
		useRemote bool
		hops      int
		xff       string // as received
		want      string
	}{
		{true, 0, "", peer},
		{true, 0, "1.1.1.1", peer},
		{true, 1, "1.1.1.1", "1.1.1.1"},
		{true, 1, "1.1.1.1, 2.2.2.2", "2.2.2.2"},
		{true, 2, "1.1.1.1, 2.2.2.2", "1.1.1.1"},
		{true, 3, "1.1.1.1, 2.2.2.2", peer},
		{false, 0, "", peer},
		{false, 0, "1.1.1.1,2.2.2.2", "2.2.2.2"},
		{false, 1, "1.1.1.1,2.2.2.2", "1.1.1.1"},
		{false, 2, "1.1.1.1,2.2.2.2", peer},
		{true, 1, "garbage", peer},
	} {
		h := &Handler{cfg: &Config{UseRemoteAddress: c.useRemote, XFFTrustedHops: c.hops}}
		req := &httpx.Request{RemoteAddr: netip.MustParseAddrPort(peer + ":1234"), Scheme: "http"}
		if c.xff != "" {
			req.Header.Add("x-forwarded-for", c.xff)
		}
		x := &exchange{h: h, req: req}
		x.edgeHeaders()
		if got := x.clientAddr().String(); got != c.want {
			t.Errorf("use_remote_address=%v hops=%d xff=%q: %s, want %s", c.useRemote, c.hops, c.xff, got, c.want)
		}
	}
}
