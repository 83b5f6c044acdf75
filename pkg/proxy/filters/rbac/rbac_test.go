package rbac

//lint:file-ignore SA1019 Envoy deprecates Principal.source_ip and the metadata matchers in favour of newer fields, but control planes (Istio's among them) still send them: how the proxy handles them is under test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"net/url"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func anyPerm() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func anyID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func cidr(s string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: s, PrefixLen: wrapperspb.UInt32(n)}
}

func template(t *testing.T, tmpl string) *rbacv3.Permission {
	a, err := anypb.New(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "uri-template", TypedConfig: a}}}
}

func jwtClaim(path []string, v *matcherv3.ValueMatcher) *rbacv3.Principal {
	mm := &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Value: v}
	for _, k := range path {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: mm}}
}

func strV(s string) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(s)}}
}

// claimV is the translator's value matcher for Istio claims: a string
// claim equal to s, or a list claim containing it.
func claimV(s string) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
		strV(s), {MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strV(s)}}}}}}}}
}

func attrs() *Attrs {
	req := &httpx.Request{Method: "GET", Target: "/api/v1/items?x=1", Authority: "shop.example.com", Scheme: "https",
		RemoteAddr: netip.MustParseAddrPort("10.0.0.7:5555"), LocalAddr: netip.MustParseAddrPort("192.168.1.1:8443")}
	req.Header.Add("x-env", "prod")
	req.Header.Add("x-env", "canary")
	u, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/web")
	cert := &x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"web.shop"}, Subject: pkix.Name{CommonName: "web", Organization: []string{"shop"}}}
	req.TLS = &tls.ConnectionState{ServerName: "shop.example.com", PeerCertificates: []*x509.Certificate{cert}}
	return &Attrs{Req: req, Peer: netip.MustParseAddr("10.0.0.7"), Client: netip.MustParseAddr("203.0.113.9"),
		Local: netip.MustParseAddrPort("192.168.1.1:443"), SNI: "shop.example.com", Cert: cert,
		Metadata: map[string]map[string]any{"envoy.filters.http.jwt_authn": {"iss": map[string]any{
			"sub": "alice", "role": "customer", "groups": []any{"a", "b"}, "n": 3.0, "ok": true, "org": map[string]any{"team": "edge"}}}}}
}

func TestRuleForms(t *testing.T) {
	perm := func(p *rbacv3.Permission) (*rbacv3.Permission, *rbacv3.Principal) { return p, anyID() }
	id := func(p *rbacv3.Principal) (*rbacv3.Permission, *rbacv3.Principal) { return anyPerm(), p }
	hdr := func(name string, sm *matcherv3.StringMatcher, invert bool) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, InvertMatch: invert, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	cases := []struct {
		name  string
		perm  *rbacv3.Permission
		id    *rbacv3.Principal
		match bool
	}{}
	add := func(name string, match bool, p *rbacv3.Permission, i *rbacv3.Principal) {
		cases = append(cases, struct {
			name  string
			perm  *rbacv3.Permission
			id    *rbacv3.Principal
			match bool
		}{name, p, i, match})
	}
	p, i := perm(anyPerm())
	add("any", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr(":method", exact("GET"), false)}})
	add("header :method", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr(":method", exact("GET"), true)}})
	add("header invert", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr(":authority", &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "SHOP.example.com"}, IgnoreCase: true}, false)}})
	add("header :authority ignore_case", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr(":path", prefix("/api/v1/items?"), false)}})
	add("header :path keeps the query", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr("x-env", exact("prod,canary"), false)}})
	add("header repeated values joined", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x-missing",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}}})
	add("header present_match false", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: hdr("x-missing", &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}, false)}})
	add("header regex on a missing header", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/api/v1/items")}}}})
	add("url_path exact ignores the query", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/ITEMS"}, IgnoreCase: true}}}}})
	add("url_path suffix ignore_case", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "v2"}}}}}})
	add("url_path contains", false, p, i)
	p, i = perm(template(t, "/api/*/items"))
	add("uri_template *", true, p, i)
	p, i = perm(template(t, "/*/items"))
	add("uri_template * is one segment", false, p, i)
	p, i = perm(template(t, "/**/items"))
	add("uri_template ** mid path", true, p, i)
	p, i = perm(template(t, "/api/{**}"))
	add("uri_template {**}", true, p, i)
	p, i = perm(template(t, "/api/{*}"))
	add("uri_template {*} not deeper", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("192.168.0.0", 16)}})
	add("destination_ip", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 443}})
	add("destination_port is the listener port", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8443}})
	add("destination_port not the socket port", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: prefix("shop.")}})
	add("requested_server_name", true, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPerm()}})
	add("not_rule", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{anyPerm(),
		{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}}}}})
	add("and_rules", false, p, i)
	p, i = perm(&rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
		{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}, anyPerm()}}}})
	add("or_rules", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: exact("spiffe://cluster.local/ns/shop/sa/web")}}})
	add("authenticated URI SAN", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: exact("web.shop")}}})
	add("authenticated DNS SAN", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: exact("CN=web,O=shop")}}})
	add("authenticated subject", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}})
	add("authenticated any certificate", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 8)}})
	add("direct_remote_ip", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}})
	add("remote_ip is not the peer", false, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("203.0.113.9", 32)}})
	add("remote_ip is the client", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: hdr("x-env", prefix("prod"), false)}})
	add("principal header", true, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: prefix("/other")}}}})
	add("principal url_path", false, p, i)
	p, i = id(jwtClaim([]string{"iss", "sub"}, strV("alice")))
	add("metadata string", true, p, i)
	p, i = id(jwtClaim([]string{"iss", "role"}, claimV("customer")))
	add("metadata claim string via or_match", true, p, i)
	p, i = id(jwtClaim([]string{"iss", "groups"}, claimV("b")))
	add("metadata claim list via or_match", true, p, i)
	p, i = id(jwtClaim([]string{"iss", "groups"}, claimV("c")))
	add("metadata claim list without it", false, p, i)
	p, i = id(jwtClaim([]string{"iss", "org", "team"}, strV("edge")))
	add("metadata nested claim", true, p, i)
	p, i = id(jwtClaim([]string{"other", "sub"}, strV("alice")))
	add("metadata other issuer", false, p, i)
	p, i = id(jwtClaim([]string{"iss", "n"}, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{
		MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: 1, End: 4}}}}}))
	add("metadata double range", true, p, i)
	p, i = id(jwtClaim([]string{"iss", "ok"}, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: true}}))
	add("metadata bool", true, p, i)
	p, i = id(jwtClaim([]string{"iss", "nope"}, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}))
	add("metadata present on a missing key", false, p, i)
	inv := jwtClaim([]string{"iss", "sub"}, strV("alice"))
	//lint:ignore SA1019 the contract's form (see matcher.go)
	inv.GetMetadata().Invert = true
	p, i = id(inv)
	add("metadata invert", false, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyID()}})
	add("not_id", false, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
		jwtClaim([]string{"iss", "sub"}, strV("alice")), jwtClaim([]string{"iss", "role"}, claimV("admin"))}}}})
	add("and_ids", false, p, i)
	p, i = id(&rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
		jwtClaim([]string{"iss", "role"}, claimV("admin")), jwtClaim([]string{"iss", "sub"}, strV("alice"))}}}})
	add("or_ids", true, p, i)

	for _, c := range cases {
		for _, action := range []rbacv3.RBAC_Action{Allow, Deny, Log} {
			t.Run(c.name+"/"+action.String(), func(t *testing.T) {
				cfg, err := CompileHTTP(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{
					"ns[shop]-policy[p]-rule[0]": {Permissions: []*rbacv3.Permission{c.perm}, Principals: []*rbacv3.Principal{c.id}}}}})
				if err != nil {
					t.Fatal(err)
				}
				a := attrs()
				allowed, matched := cfg.engine.Evaluate(a)
				if (matched != "") != c.match {
					t.Fatalf("matched %q, want match=%v", matched, c.match)
				}
				want := map[rbacv3.RBAC_Action]bool{Allow: c.match, Deny: !c.match, Log: true}[action]
				if allowed != want {
					t.Fatalf("allowed=%v, want %v", allowed, want)
				}
				// The filter answers as Envoy: 403 "RBAC: access denied".
				st := stats.NewStore()
				f := cfg.New(filters.Env{Stats: st, StatPrefix: "in"})
				r := f.Decode(&filters.Stream{Req: a.Req, Client: a.Client, Local: a.Local, Metadata: a.Metadata})
				if (r == nil) != want || r != nil && (r.Status != 403 || r.Body != "RBAC: access denied") {
					t.Fatalf("filter reply %+v, want allowed=%v", r, want)
				}
				name := "http.in.rbac.allowed"
				if !want {
					name = "http.in.rbac.denied"
				}
				if v, _ := st.Lookup(name); v != 1 {
					t.Errorf("%s = %d", name, v)
				}
			})
		}
	}
}

func TestEmptyAllowDeniesEverything(t *testing.T) {
	cfg, err := CompileHTTP(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: Allow}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := cfg.engine.Evaluate(attrs()); ok {
		t.Fatal("an ALLOW without policies allowed a request (Istio's spec: {} denies all)")
	}
	cfg, _ = CompileHTTP(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: Deny}})
	if ok, _ := cfg.engine.Evaluate(attrs()); !ok {
		t.Fatal("a DENY without policies denied a request")
	}
}

func TestNetworkRefusesHTTPForms(t *testing.T) {
	policy := func(p *rbacv3.Permission, i *rbacv3.Principal) *netrbacv3.RBAC {
		return &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {
			Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{i}}}}}
	}
	bad := []*netrbacv3.RBAC{
		policy(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x"}}}, anyID()),
		policy(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{}}}, anyID()),
		policy(template(t, "/a"), anyID()),
		policy(anyPerm(), jwtClaim([]string{"a"}, strV("b"))),
	}
	for i, m := range bad {
		if _, err := CompileNetwork(m); err == nil {
			t.Errorf("case %d: accepted an HTTP-only form in network rbac", i)
		}
	}
	n, err := CompileNetwork(policy(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 3306}},
		&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}))
	if err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	f := n.New(st)
	if !f.Allow(&Attrs{Peer: netip.MustParseAddr("10.1.2.3"), Local: netip.MustParseAddrPort("127.0.0.1:3306")}) {
		t.Error("remote_ip on a connection should be the peer")
	}
	if f.Allow(&Attrs{Peer: netip.MustParseAddr("11.1.2.3"), Local: netip.MustParseAddrPort("127.0.0.1:3306")}) {
		t.Error("allowed a peer outside the block")
	}
	if a, _ := st.Lookup("tcp.rbac.allowed"); a != 1 {
		t.Errorf("tcp.rbac.allowed = %d", a)
	}
	if d, _ := st.Lookup("tcp.rbac.denied"); d != 1 {
		t.Errorf("tcp.rbac.denied = %d", d)
	}
}

func TestCompileRejectsUnsupported(t *testing.T) {
	cases := map[string]*rbacv3.Policy{
		"destination_port_range": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPortRange{}}}, Principals: []*rbacv3.Principal{anyID()}},
		"source_ip":              {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("1.2.3.4", 32)}}}},
		"bad CIDR":               {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("nope", 8)}}}},
		"bad regex": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}}}, Principals: []*rbacv3.Principal{anyID()}},
		"no principals": {Permissions: []*rbacv3.Permission{anyPerm()}},
	}
	for name, p := range cases {
		if _, err := CompileHTTP(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": p}}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := CompileHTTP(&httprbacv3.RBAC{}); err == nil {
		t.Error("accepted an RBAC without rules")
	}
}
