// Package ratelimit is Envoy's envoy.filters.http.local_ratelimit for the
// edge proxy: a token bucket per route or virtual host configuration
// (typed_per_filter_config, the most specific wins), shared by every
// connection of the proxy, answering 429 "local_rate_limited" with the
// configured response headers and Envoy's stats.
package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Name is the filter's name (and its typed_per_filter_config key).
const Name = "envoy.filters.http.local_ratelimit"

// Body is Envoy's 429 body.
const Body = "local_rate_limited"

// minFillInterval is Envoy's lower bound for fill_interval.
const minFillInterval = 50 * time.Millisecond

// Limiter is one compiled LocalRateLimit with its token bucket. A route's
// (or virtual host's) limiter is built when its configuration is compiled
// and kept as long as the compiled configuration is reused, so unchanged
// routes keep their bucket across updates.
type Limiter struct {
	statPrefix string
	bucket     *bucket // nil: nothing to limit
	enabled    uint32  // per million
	enforced   uint32  // per million
	status     int
	headers    []httpx.Field
	st         atomic.Pointer[limiterStats]
}

type limiterStats struct {
	enabled, enforced, limited, ok *stats.Counter
}

// Compile compiles a LocalRateLimit (the connection manager's or a
// route's).
func Compile(m *lrlv3.LocalRateLimit) (*Limiter, error) {
	if m.StatPrefix == "" {
		return nil, fmt.Errorf("local_ratelimit: stat_prefix is required")
	}
	l := &Limiter{statPrefix: m.StatPrefix, status: 429,
		enabled: perMillion(m.FilterEnabled), enforced: perMillion(m.FilterEnforced)}
	if s := m.GetStatus().GetCode(); s != 0 {
		if s < 400 || s > 599 {
			return nil, fmt.Errorf("local_ratelimit %s: status %d is not an error status", m.StatPrefix, s)
		}
		l.status = int(s)
	}
	if tb := m.TokenBucket; tb != nil {
		interval := tb.GetFillInterval().AsDuration()
		if interval < minFillInterval {
			return nil, fmt.Errorf("local_ratelimit %s: fill_interval must be at least %v", m.StatPrefix, minFillInterval)
		}
		if tb.MaxTokens == 0 {
			return nil, fmt.Errorf("local_ratelimit %s: max_tokens must be positive", m.StatPrefix)
		}
		perFill := uint32(1)
		if tb.TokensPerFill != nil {
			perFill = tb.TokensPerFill.Value
		}
		l.bucket = newBucket(tb.MaxTokens, perFill, interval, time.Now())
	} else if l.enabled > 0 {
		return nil, fmt.Errorf("local_ratelimit %s: filter_enabled without a token_bucket", m.StatPrefix)
	}
	for _, h := range m.ResponseHeadersToAdd {
		f := httpx.Field{Name: strings.ToLower(h.GetHeader().GetKey()), Value: h.GetHeader().GetValue()}
		if f.Name == "" || strings.Contains(f.Value, "%") {
			return nil, fmt.Errorf("local_ratelimit %s: response header %q: a name and a literal value are required", m.StatPrefix, f.Name)
		}
		switch h.AppendAction {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			corev3.HeaderValueOption_ADD_IF_ABSENT:
			// A local reply has no such header yet: all three add it.
			l.headers = append(l.headers, f)
		default:
			return nil, fmt.Errorf("local_ratelimit %s: unsupported append action %v", m.StatPrefix, h.AppendAction)
		}
	}
	return l, nil
}

// perMillion reads a RuntimeFractionalPercent's default (absent: 0, as
// Envoy treats an absent filter_enabled/filter_enforced). Runtime keys
// are accepted and ignored: the proxy has no runtime overrides.
func perMillion(p *corev3.RuntimeFractionalPercent) uint32 {
	if p == nil {
		return 0
	}
	d := p.GetDefaultValue()
	if d == nil {
		return 0
	}
	switch d.Denominator {
	case typev3.FractionalPercent_HUNDRED:
		return min(d.Numerator*10000, 1000000)
	case typev3.FractionalPercent_TEN_THOUSAND:
		return min(d.Numerator*100, 1000000)
	default:
		return min(d.Numerator, 1000000)
	}
}

func roll(perMillion uint32) bool {
	return perMillion >= 1000000 || perMillion > 0 && rand.Uint32N(1000000) < perMillion
}

func (l *Limiter) stats(store *stats.Store) *limiterStats {
	if s := l.st.Load(); s != nil {
		return s
	}
	sc := stats.Plain(l.statPrefix + ".http_local_rate_limit")
	s := &limiterStats{enabled: store.Counter(sc, "enabled"), enforced: store.Counter(sc, "enforced"),
		limited: store.Counter(sc, "rate_limited"), ok: store.Counter(sc, "ok")}
	l.st.Store(s)
	return s
}

// bucket is a token bucket refilled by tokens_per_fill every
// fill_interval (Envoy's timer-driven fill, computed on use).
type bucket struct {
	mu       sync.Mutex
	tokens   uint32
	max      uint32
	perFill  uint32
	interval time.Duration
	last     time.Time
}

func newBucket(max, perFill uint32, interval time.Duration, now time.Time) *bucket {
	return &bucket{tokens: max, max: max, perFill: perFill, interval: interval, last: now}
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last); elapsed >= b.interval {
		fills := uint64(elapsed / b.interval)
		b.last = b.last.Add(time.Duration(fills) * b.interval)
		add := fills * uint64(b.perFill)
		b.tokens = uint32(min(uint64(b.tokens)+add, uint64(b.max)))
	}
	if b.tokens == 0 {
		return false
	}
	b.tokens--
	return true
}

// Config is the connection-manager-level filter.
type Config struct {
	base *Limiter
}

// CompileFilter compiles the connection manager's local_ratelimit entry
// (usually a no-op carrying only stat_prefix; routes bring buckets).
func CompileFilter(m *lrlv3.LocalRateLimit) (*Config, error) {
	l, err := Compile(m)
	if err != nil {
		return nil, err
	}
	return &Config{base: l}, nil
}

// Name implements filters.HTTPFactory.
func (c *Config) Name() string { return Name }

// New implements filters.HTTPFactory.
func (c *Config) New(env filters.Env) filters.HTTP {
	now := env.Now
	if now == nil {
		now = time.Now
	}
	return &Filter{base: c.base, store: env.Stats, now: now}
}

// Filter is a local_ratelimit instance.
type Filter struct {
	base  *Limiter
	store *stats.Store
	now   func() time.Time
}

// Decode implements filters.HTTP.
func (f *Filter) Decode(s *filters.Stream) *filters.Reply {
	l := f.base
	if s.Route != nil {
		if rl, ok := s.Route.PerFilterConfig(Name).(*Limiter); ok && rl != nil {
			l = rl
		}
	}
	if l.bucket == nil || !roll(l.enabled) {
		return nil
	}
	st := l.stats(f.store)
	st.enabled.Inc()
	if l.bucket.take(f.now()) {
		st.ok.Inc()
		return nil
	}
	st.limited.Inc()
	if !roll(l.enforced) {
		return nil
	}
	st.enforced.Inc()
	r := &filters.Reply{Status: l.status, Body: Body, Flags: accesslog.RateLimited}
	r.Headers = append(r.Headers, l.headers...)
	return r
}
