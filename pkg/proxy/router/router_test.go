package router

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

func vh(name string, domains ...string) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{{
		Name:   name,
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
	}}}
}

func TestVirtualHostPrecedence(t *testing.T) {
	table, err := Compile(&routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{
		vh("exact", "api.example.com"),
		vh("suffix-short", "*.com"),
		vh("suffix-long", "*.example.com"),
		vh("suffix-dash", "*-staging.example.com"),
		vh("prefix", "api.*"),
		vh("prefix-long", "api.internal.*"),
		vh("any", "*"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ host, want string }{
		{"api.example.com", "exact"},
		{"API.Example.COM", "exact"},
		{"web.example.com", "suffix-long"},
		{"web-staging.example.com", "suffix-dash"},
		{"example.com", "suffix-short"},
		{"api.internal.corp", "prefix-long"},
		{"api.other.org", "prefix"},
		{"other.org", "any"},
		{".example.com", "suffix-short"}, // a wildcard needs at least one character
		{"", "any"},
	}
	for _, c := range cases {
		got := table.VirtualHost(c.host)
		if got == nil || got.Name != c.want {
			t.Errorf("VirtualHost(%q) = %v, want %s", c.host, got, c.want)
		}
	}
	t.Run("ports", func(t *testing.T) {
		table.IgnorePortInHost = true
		if got := table.VirtualHost("api.example.com:8080"); got.Name != "exact" {
			t.Errorf("port not ignored: %s", got.Name)
		}
		if got := table.VirtualHost("[::1]:80"); got.Name != "any" {
			t.Errorf("IPv6 with port: %s", got.Name)
		}
	})
	t.Run("duplicate domains are rejected", func(t *testing.T) {
		_, err := Compile(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{vh("a", "x.com"), vh("b", "X.com")}})
		if err == nil || !strings.Contains(err.Error(), "x.com") {
			t.Errorf("got %v", err)
		}
	})
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func route(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c-" + name}}}}
}

func TestRouteMatching(t *testing.T) {
	routes := []*routev3.Route{
		route("exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/login"}}),
		route("ci-prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/Admin"}, CaseSensitive: wrapperspb.Bool(false)}),
		route("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/api/v[0-9]+/.*"}}}),
		route("separated", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/docs"}}),
		route("header", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}},
		}}),
		route("not-blocked", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/guarded"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x-block", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
		}}),
		route("method", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/items"}, Headers: []*routev3.HeaderMatcher{
			{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("POST")}},
		}}),
		route("query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/search"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "go"}}}},
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
		}}),
		route("header-regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/trace"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x-trace", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[a-f0-9]+"}}}}},
		}}),
		route("fallback", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}),
	}
	table, err := Compile(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: routes}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, target string
		headers        map[string]string
		want           string
	}{
		{"GET", "/login", nil, "exact"},
		{"GET", "/login?next=/", nil, "exact"},
		{"GET", "/login/x", nil, "fallback"},
		{"GET", "/aDMIN/users", nil, "ci-prefix"},
		{"GET", "/api/v2/things", nil, "regex"},
		{"GET", "/api/vX/things", nil, "fallback"},
		{"GET", "/xapi/v2/things", nil, "fallback"}, // regexes match the whole path
		{"GET", "/docs", nil, "separated"},
		{"GET", "/docs/intro", nil, "separated"},
		{"GET", "/docsearch", nil, "fallback"},
		{"GET", "/anything", map[string]string{"end-user": "jason"}, "header"},
		{"GET", "/anything", map[string]string{"end-user": "Jason"}, "fallback"},
		{"GET", "/guarded", nil, "not-blocked"},
		{"GET", "/guarded", map[string]string{"x-block": ""}, "fallback"},
		{"POST", "/items", nil, "method"},
		{"GET", "/items", nil, "fallback"},
		{"GET", "/search?q=gopher&debug", nil, "query"},
		{"GET", "/search?q=gopher", nil, "fallback"},
		{"GET", "/search?q=rust&debug=1", nil, "fallback"},
		{"GET", "/trace", map[string]string{"x-trace": "abc123"}, "header-regex"},
		{"GET", "/trace", map[string]string{"x-trace": "abc123z"}, "fallback"},
	}
	v := table.VirtualHost("any")
	for _, c := range cases {
		req := &httpx.Request{Method: c.method, Target: c.target, Authority: "any"}
		for k, val := range c.headers {
			req.Header.Add(k, val)
		}
		r := v.Match(req)
		if r == nil || r.Name != c.want {
			got := "<nil>"
			if r != nil {
				got = r.Name
			}
			t.Errorf("%s %s %v: matched %s, want %s", c.method, c.target, c.headers, got, c.want)
		}
	}
}

func TestCompileActionsAndErrors(t *testing.T) {
	wc := &routev3.Route{Name: "split", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "v1", Weight: wrapperspb.UInt32(75)}, {Name: "v2", Weight: wrapperspb.UInt32(25)},
			}}},
			Timeout:       durationpb.New(0),
			PrefixRewrite: "/v2/",
			RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,retriable-status-codes", NumRetries: wrapperspb.UInt32(2),
				RetriableStatusCodes: []uint32{409}, PerTryTimeout: durationpb.New(5e9)},
			RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow"}, {Cluster: "shadow", DisableShadowHostSuffixAppend: true}},
		}},
		RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "X-A", Value: "1"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
	}
	table, err := Compile(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{wc}}}})
	if err != nil {
		t.Fatal(err)
	}
	r := table.VirtualHost("x").Routes[0]
	if r.TotalWeight != 100 || len(r.Clusters) != 2 || r.Timeout != 0 {
		t.Errorf("weighted clusters: %+v", r)
	}
	if got := strings.Join(table.Clusters, ","); got != "shadow,v1,v2" {
		t.Errorf("referenced clusters = %s", got)
	}
	if len(r.Mirrors) != 2 || r.Mirrors[0].KeepHost || !r.Mirrors[1].KeepHost {
		t.Errorf("mirrors (KeepHost from disable_shadow_host_suffix_append): %+v", r.Mirrors)
	}
	if got := r.RewriteTarget("/api/users?id=1"); got != "/v2/users?id=1" {
		t.Errorf("prefix rewrite = %s", got)
	}
	if !r.Retry.RetriableStatus(503, -1) || !r.Retry.RetriableStatus(409, -1) || r.Retry.RetriableStatus(404, -1) {
		t.Error("retry conditions")
	}
	var h httpx.Header
	h.Add("x-a", "0")
	r.RequestHeaders.Apply(&h)
	if h.Get("x-a") != "1" || len(h.Fields) != 1 {
		t.Errorf("header ops: %+v", h)
	}

	bad := []*routev3.Route{
		{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}},
		{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, RetryPolicy: &routev3.RetryPolicy{RetryOn: "sometimes"}}}},
	}
	for i, b := range bad {
		if _, err := Compile(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{b}}}}); err == nil {
			t.Errorf("bad route %d compiled", i)
		}
	}
}

func FuzzVirtualHost(f *testing.F) {
	table, err := Compile(&routev3.RouteConfiguration{IgnorePortInHostMatching: true, VirtualHosts: []*routev3.VirtualHost{
		vh("exact", "api.example.com"), vh("suffix", "*.example.com"), vh("prefix", "api.*"), vh("any", "*"),
	}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"api.example.com", "x.example.com:80", "api.x", "[::1]:8080", ":", "*", ".example.com", "api."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		v := table.VirtualHost(host)
		if v == nil {
			t.Fatalf("no virtual host for %q despite a catch-all", host)
		}
		h := strings.ToLower(StripPort(host))
		switch {
		case h == "api.example.com" && v.Name != "exact":
			t.Fatalf("%q: exact host matched %s", host, v.Name)
		case v.Name == "suffix" && !strings.HasSuffix(h, ".example.com"):
			t.Fatalf("%q matched the suffix wildcard", host)
		case v.Name == "prefix" && !strings.HasPrefix(h, "api."):
			t.Fatalf("%q matched the prefix wildcard", host)
		}
	})
}

// Envoy's rule for a missing header: a string matcher fails, inverted or
// not, unless treat_missing_header_as_empty matches it as "" (what Istio's
// withoutHeaders, and Portico's translator, send).
func TestMissingHeaderWithInvertedMatch(t *testing.T) {
	for _, tc := range []struct {
		treatMissing bool
		want         bool
	}{{false, false}, {true, true}} {
		r := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{Name: "x-env", InvertMatch: true, TreatMissingHeaderAsEmpty: tc.treatMissing,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "canary"}}}}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}}
		table, err := Compile(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{r}}}})
		if err != nil {
			t.Fatal(err)
		}
		got := table.VirtualHost("x").Match(&httpx.Request{Method: "GET", Target: "/", Authority: "x"}) != nil
		if got != tc.want {
			t.Errorf("treat_missing_header_as_empty=%v: request without x-env matched=%v, want %v", tc.treatMissing, got, tc.want)
		}
	}
}
