package ratelimit

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// RouteConfig is the per-route shape of the contract (section 4).
func RouteConfig(prefix string, max, perFill uint32, every time.Duration) *lrlv3.LocalRateLimit {
	full := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}, RuntimeKey: "local_rate_limit_enabled"}
	return &lrlv3.LocalRateLimit{StatPrefix: prefix,
		TokenBucket:    &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(perFill), FillInterval: durationpb.New(every)},
		FilterEnabled:  full,
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-envoy-ratelimited", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}}
}

type route struct{ l *Limiter }

func (r route) PerFilterConfig(name string) any {
	if name == Name && r.l != nil {
		return r.l
	}
	return nil
}

func TestBucketAndReplies(t *testing.T) {
	now := time.Unix(1000, 0)
	base, err := CompileFilter(&lrlv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := Compile(RouteConfig("route_a", 3, 2, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	lim.bucket = newBucket(3, 2, time.Minute, now)
	st := stats.NewStore()
	f := base.New(filters.Env{Stats: st, Now: func() time.Time { return now }})
	req := &httpx.Request{Method: "GET", Target: "/"}
	// No per-route config: the connection manager's no-op entry passes all.
	for i := 0; i < 10; i++ {
		if r := f.Decode(&filters.Stream{Req: req, Route: route{}}); r != nil {
			t.Fatal("the HCM-level no-op limited a request")
		}
	}
	got := func() []int {
		var out []int
		for i := 0; i < 5; i++ {
			r := f.Decode(&filters.Stream{Req: req, Route: route{lim}})
			if r == nil {
				out = append(out, 200)
				continue
			}
			if r.Body != "local_rate_limited" || r.Flags != accesslog.RateLimited || len(r.Headers) != 1 ||
				r.Headers[0] != (httpx.Field{Name: "x-envoy-ratelimited", Value: "true"}) {
				t.Fatalf("reply %+v", r)
			}
			out = append(out, r.Status)
		}
		return out
	}
	want := []int{200, 200, 200, 429, 429}
	if g := got(); !equal(g, want) {
		t.Fatalf("first minute: %v, want %v", g, want)
	}
	now = now.Add(59 * time.Second)
	if g := got(); !equal(g, []int{429, 429, 429, 429, 429}) {
		t.Fatalf("before the fill: %v", g)
	}
	now = now.Add(time.Second)
	if g := got(); !equal(g, []int{200, 200, 429, 429, 429}) {
		t.Fatalf("after one fill of 2: %v", g)
	}
	now = now.Add(10 * time.Minute)
	if g := got(); !equal(g, want) {
		t.Fatalf("after many fills (capped at max_tokens): %v", g)
	}
	for name, v := range map[string]int64{"enabled": 20, "ok": 8, "rate_limited": 12, "enforced": 12} {
		if got, _ := st.Lookup("route_a.http_local_rate_limit." + name); got != v {
			t.Errorf("%s = %d, want %d", name, got, v)
		}
	}
}

func TestNotEnforcedOnlyCounts(t *testing.T) {
	m := RouteConfig("shadow", 1, 1, time.Hour)
	m.FilterEnforced = nil
	lim, err := Compile(m)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := CompileFilter(&lrlv3.LocalRateLimit{StatPrefix: "x"})
	st := stats.NewStore()
	f := base.New(filters.Env{Stats: st})
	for i := 0; i < 3; i++ {
		if r := f.Decode(&filters.Stream{Req: &httpx.Request{}, Route: route{lim}}); r != nil {
			t.Fatal("limited without filter_enforced")
		}
	}
	if v, _ := st.Lookup("shadow.http_local_rate_limit.rate_limited"); v != 2 {
		t.Errorf("rate_limited = %d", v)
	}
}

func TestCompileRejects(t *testing.T) {
	bad := []*lrlv3.LocalRateLimit{
		{},
		RouteConfig("p", 0, 1, time.Second),
		RouteConfig("p", 1, 1, time.Millisecond),
		{StatPrefix: "p", FilterEnabled: RouteConfig("p", 1, 1, time.Second).FilterEnabled},
	}
	for i, m := range bad {
		if _, err := Compile(m); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
}

func equal(a, b []int) bool {
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
