package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testjwt"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/filters/jwtauthn"
	"github.com/portico-gateway/portico/pkg/proxy/filters/rbac"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// tenRulePolicy is the translation of an ALLOW AuthorizationPolicy with
// ten rules, the last of which the benchmark's requests match: nine rules
// on hosts, methods and paths that do not match, then the seed 002 rule.
func tenRulePolicy(t testing.TB) *hcmv3.HttpFilter {
	iss := testjwt.SampleIssuer
	policies := map[string]*rbacv3.Policy{}
	header := func(name string, sm *matcherv3.StringMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}}}
	}
	for i := 0; i < 9; i++ {
		perm := &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				header(":authority", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: fmt.Sprintf("svc%d.example.com", i)}, IgnoreCase: true})}}}},
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{header(":method", strExact("POST"))}}}},
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: fmt.Sprintf("/admin%d/", i)}}}}}}}}}},
		}}}}
		policies[fmt.Sprintf("ns[default]-policy[ten]-rule[%d]", i)] = &rbacv3.Policy{Permissions: []*rbacv3.Permission{perm},
			Principals: []*rbacv3.Principal{andIDs(metaString(iss, iss, "sub"))}}
	}
	policies["ns[default]-policy[ten]-rule[9]"] = &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{header(":method", strExact("GET"))}}}}}}}}},
		Principals: []*rbacv3.Principal{andIDs(andIDs(metaString(iss, iss, "sub")), claimIs(iss, "customer", "role"))},
	}
	return rbacFilter(t, rbacv3.RBAC_ALLOW, policies)
}

// forwarding sets forward: true on every provider of a jwt_authn filter.
func forwarding(t testing.TB, f *hcmv3.HttpFilter) *hcmv3.HttpFilter {
	m := &jwtv3.JwtAuthentication{}
	if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Providers {
		p.Forward = true
	}
	return httpFilter(t, f.Name, m)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAuthzCost measures requests carrying a valid RS256 JWT through
// the real proxy (loopback, HTTP/1.1 keep-alive, 8 connections) without
// authn/authz and with jwt_authn plus a ten-rule ALLOW policy, in the
// same run. cpu-µs/req is
// the whole process (client, proxy, backend): the client's and backend's
// share is the same in both, so the difference is the proxy's cost.
func BenchmarkAuthzCost(b *testing.B) {
	for _, c := range []struct {
		name    string
		filters func(testing.TB) []*hcmv3.HttpFilter
		token   string
	}{
		// Both send the same token and forward it, so the client's,
		// backend's and codec's work is the same: the difference is the
		// filters'.
		{"none", func(testing.TB) []*hcmv3.HttpFilter { return nil }, testjwt.SeedCustomer},
		{"jwt+rbac10", func(t testing.TB) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{forwarding(t, istioJWT(t, testjwt.SampleIssuer, testjwt.SampleJWKS)), tenRulePolicy(t)}
		}, testjwt.SeedCustomer},
	} {
		b.Run(c.name, func(b *testing.B) {
			backend := testenv.StartBackend(b, "v1")
			tr := authzBuild(b, backend)
			if fs := c.filters(b); len(fs) > 0 {
				withHTTPFilters(b, tr, fs...)
			}
			cp := testenv.StartControlPlane(b, "")
			cp.PublishResources(b, tr)
			p := testenv.StartProxy(b, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, Log: testenv.Logger(b).V(1)})
			p.WaitReady(b)
			const conns = 8
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
			defer client.CloseIdleConnections()
			url := p.URL(80) + "/book/1"
			one := func() error {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "books.example.com"
				if c.token != "" {
					req.Header.Set("Authorization", "Bearer "+c.token)
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			for i := 0; i < 200; i++ { // warm connections and caches
				if err := one(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			var wg sync.WaitGroup
			var failed sync.Once
			var ferr error
			per := b.N/conns + 1
			for w := 0; w < conns; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if err := one(); err != nil {
							failed.Do(func() { ferr = err })
							return
						}
					}
				}()
			}
			wg.Wait()
			cpu := cpuTime() - cpu0
			b.StopTimer()
			if ferr != nil {
				b.Fatal(ferr)
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(per*conns), "cpu-µs/req")
		})
	}
}

// BenchmarkAuthzFilters is the per-request work BenchmarkAuthzCost's
// jwt+rbac10 adds, without the sockets' noise: the compiled filters of
// that configuration decoding a request with the seed's customer token
// (from the verified-token cache after the first request), as the
// connection manager runs them. "first-verify" is the cost on a cache
// miss (one RS256 verification).
func BenchmarkAuthzFilters(b *testing.B) {
	mk := func() []filters.HTTP {
		var out []filters.HTTP
		for _, f := range []*hcmv3.HttpFilter{istioJWT(b, testjwt.SampleIssuer, testjwt.SampleJWKS), tenRulePolicy(b)} {
			var fac filters.HTTPFactory
			switch f.Name {
			case jwtauthn.Name:
				m := &jwtv3.JwtAuthentication{}
				if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
					b.Fatal(err)
				}
				c, err := jwtauthn.Compile(m)
				if err != nil {
					b.Fatal(err)
				}
				fac = c
			default:
				m := &httprbacv3.RBAC{}
				if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
					b.Fatal(err)
				}
				c, err := rbac.CompileHTTP(m)
				if err != nil {
					b.Fatal(err)
				}
				fac = c
			}
			out = append(out, fac.New(filters.Env{Stats: stats.NewStore(), StatPrefix: "bench"}))
		}
		return out
	}
	request := func() *httpx.Request {
		r := &httpx.Request{Method: "GET", Target: "/book/1", Authority: "books.example.com", Scheme: "http", Proto: "HTTP/1.1",
			RemoteAddr: netip.MustParseAddrPort("127.0.0.1:40000"), LocalAddr: netip.MustParseAddrPort("127.0.0.1:80")}
		hdr := []string{"user-agent", "Go-http-client/1.1", "accept-encoding", "gzip", "x-forwarded-for", "127.0.0.1",
			"x-forwarded-proto", "http", "x-request-id", "3b8c3f7e-0000-4000-8000-000000000000", "authorization", "Bearer " + testjwt.SeedCustomer}
		for i := 0; i < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	run := func(b *testing.B, fs []filters.HTTP, fresh bool) {
		base := request()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if fresh {
				b.StopTimer()
				fs = mk()
				b.StartTimer()
			}
			req := *base
			req.Header = base.Header.Clone()
			s := &filters.Stream{Req: &req, Client: req.RemoteAddr.Addr(), Local: req.LocalAddr}
			for _, f := range fs {
				if r := f.Decode(s); r != nil {
					b.Fatalf("denied: %d %s", r.Status, r.Body)
				}
			}
		}
	}
	b.Run("cached", func(b *testing.B) { run(b, mk(), false) })
	b.Run("first-verify", func(b *testing.B) { run(b, nil, true) })
	b.Run("header-clone-only", func(b *testing.B) { run(b, nil, false) })
}
