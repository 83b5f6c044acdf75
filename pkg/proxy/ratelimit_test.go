package proxy_test

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/translate"
)

// routeLimit is the contract's per-route/per-vhost LocalRateLimit
// (section 4).
func routeLimit(prefix string, max uint32, every time.Duration) *lrlv3.LocalRateLimit {
	hundred := func() *corev3.RuntimeFractionalPercent {
		return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
			RuntimeKey: "local_rate_limit_enabled"}
	}
	return &lrlv3.LocalRateLimit{StatPrefix: prefix,
		TokenBucket:    &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(max), FillInterval: durationpb.New(every)},
		FilterEnabled:  hundred(),
		FilterEnforced: hundred(),
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-envoy-ratelimited", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}}
}

// limitBooks builds the gateway with a second host, the HCM-level no-op
// local_ratelimit, and lim on the books virtual host (route or vhost).
func limitBooks(t *testing.T, backend *testenv.Backend, otherHost string, lim *lrlv3.LocalRateLimit, onVHost bool) *translate.Resources {
	t.Helper()
	extra := `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other}
spec:
  hosts: [` + otherHost + `]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: rating.default.svc.cluster.local}}]}]
`
	tr, _ := testenv.Build(t, gateway80+"---\n"+authzRoutes+extra+testenv.ServiceEntry("rating", "rating.default.svc.cluster.local", 80, "HTTP", backend), testenv.Ingress)
	withHTTPFilters(t, tr, httpFilter(t, "envoy.filters.http.local_ratelimit", &lrlv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"}))
	a, err := anypb.New(lim)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rc := range tr.Routes {
		for _, vh := range rc.VirtualHosts {
			if !strings.HasPrefix(vh.Name, "*") {
				continue // the catch-all (books) host only
			}
			if onVHost {
				vh.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": a}
			} else {
				for _, r := range vh.Routes {
					if r.TypedPerFilterConfig == nil {
						r.TypedPerFilterConfig = map[string]*anypb.Any{}
					}
					r.TypedPerFilterConfig["envoy.filters.http.local_ratelimit"] = a
				}
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no catch-all virtual host")
	}
	return tr
}

func TestLocalRateLimit(t *testing.T) {
	for _, onVHost := range []bool{false, true} {
		name := "route"
		if onVHost {
			name = "virtual host"
		}
		t.Run(name, func(t *testing.T) {
			backend := testenv.StartBackend(t, "books")
			p, cp := startAuthz(t, limitBooks(t, backend, "one.example.com", routeLimit("books_limit", 3, time.Hour), onVHost))
			codes := func(n int) []int {
				var out []int
				for i := 0; i < n; i++ {
					r := send(t, p, "GET", "/", nil)
					out = append(out, r.code)
					if r.code == 429 && (r.body != "local_rate_limited" || r.hdr.Get("X-Envoy-Ratelimited") != "true") {
						t.Fatalf("429 %q headers %v", r.body, r.hdr)
					}
				}
				return out
			}
			if got := codes(5); !equalInts(got, []int{200, 200, 200, 429, 429}) {
				t.Fatalf("first five requests: %v", got)
			}
			// Another virtual host changes: the books bucket is kept.
			publishAndWait(t, cp, limitBooks(t, backend, "two.example.com", routeLimit("books_limit", 3, time.Hour), onVHost))
			if got := codes(2); !equalInts(got, []int{429, 429}) {
				t.Fatalf("after an unrelated update the bucket must be kept: %v", got)
			}
			// Its own configuration changes: a new bucket.
			publishAndWait(t, cp, limitBooks(t, backend, "two.example.com", routeLimit("books_limit", 4, time.Hour), onVHost))
			if got := codes(5); !equalInts(got, []int{200, 200, 200, 200, 429}) {
				t.Fatalf("after its own change: %v", got)
			}
			for stat, want := range map[string]int64{"enabled": 12, "ok": 7, "rate_limited": 5, "enforced": 5} {
				if v := stat2(p, "books_limit.http_local_rate_limit."+stat); v != want {
					t.Errorf("%s = %d, want %d", stat, v, want)
				}
			}
			p.Stop() // flushes the access log
			if n := strings.Count(p.Log.String(), `" 429 RL `); n != 5 {
				t.Errorf("%d access log lines with 429 RL, want 5:\n%s", n, p.Log.String())
			}
		})
	}
}

func stat2(p *testenv.Proxy, name string) int64 { v, _ := p.Stats.Lookup(name); return v }

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
