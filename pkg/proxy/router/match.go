package router

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

type pathKind int

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

type matcher struct {
	kind          pathKind
	value         string
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
	query         []queryMatcher
}

type headerMatcher struct {
	name    string
	present bool // present_match
	sm      *StringMatcher
	invert  bool
	// treatMissing is treat_missing_header_as_empty: a missing header is
	// matched as "". Without it a missing header fails a string matcher,
	// inverted or not (Envoy's rule).
	treatMissing bool
}

type queryMatcher struct {
	name    string
	present bool
	sm      *StringMatcher
}

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	kind       int // 0 exact 1 prefix 2 suffix 3 contains 4 regex
	value      string
	ignoreCase bool
	re         *regexp.Regexp
}

// Match reports whether s matches.
func (m *StringMatcher) Match(s string) bool {
	if m.kind == 4 {
		return m.re.MatchString(s)
	}
	v := m.value
	if m.ignoreCase {
		s = strings.ToLower(s)
	}
	switch m.kind {
	case 0:
		return s == v
	case 1:
		return strings.HasPrefix(s, v)
	case 2:
		return strings.HasSuffix(s, v)
	default:
		return strings.Contains(s, v)
	}
}

// anchored compiles an RE2 expression that must match the whole input, as
// Envoy's safe_regex does.
func anchored(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("invalid regex %q: %w", expr, err)
	}
	return re, nil
}

// CompileStringMatcher compiles a StringMatcher.
func CompileStringMatcher(sm *matcherv3.StringMatcher) (StringMatcher, error) {
	out := StringMatcher{ignoreCase: sm.IgnoreCase}
	switch p := sm.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		out.kind, out.value = 0, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.kind, out.value = 1, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.kind, out.value = 2, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.kind, out.value = 3, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := anchored(p.SafeRegex.GetRegex())
		if err != nil {
			return out, err
		}
		out.kind, out.re = 4, re
	default:
		return out, fmt.Errorf("unsupported string matcher %T", p)
	}
	if out.ignoreCase {
		out.value = strings.ToLower(out.value)
	}
	return out, nil
}

func compileMatch(m *routev3.RouteMatch) (matcher, error) {
	out := matcher{caseSensitive: m.CaseSensitive == nil || m.CaseSensitive.Value}
	switch p := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Prefix:
		out.kind, out.value = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		out.kind, out.value = pathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.kind, out.value = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := anchored(p.SafeRegex.GetRegex())
		if err != nil {
			return out, err
		}
		out.kind, out.re = pathRegex, re
	default:
		return out, fmt.Errorf("unsupported path match %T", p)
	}
	if !out.caseSensitive {
		out.value = strings.ToLower(out.value)
	}
	for _, h := range m.Headers {
		hm := headerMatcher{name: strings.ToLower(h.Name), invert: h.InvertMatch, treatMissing: h.TreatMissingHeaderAsEmpty}
		switch s := h.HeaderMatchSpecifier.(type) {
		case *routev3.HeaderMatcher_PresentMatch:
			hm.present = s.PresentMatch
			if !s.PresentMatch {
				hm.present, hm.invert = true, !hm.invert
			}
		case *routev3.HeaderMatcher_StringMatch:
			sm, err := CompileStringMatcher(s.StringMatch)
			if err != nil {
				return out, fmt.Errorf("header %s: %w", h.Name, err)
			}
			hm.sm = &sm
		default:
			return out, fmt.Errorf("header %s: unsupported matcher %T", h.Name, s)
		}
		out.headers = append(out.headers, hm)
	}
	for _, q := range m.QueryParameters {
		qm := queryMatcher{name: q.Name}
		switch s := q.QueryParameterMatchSpecifier.(type) {
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.present = true
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := CompileStringMatcher(s.StringMatch)
			if err != nil {
				return out, fmt.Errorf("query parameter %s: %w", q.Name, err)
			}
			qm.sm = &sm
		default:
			return out, fmt.Errorf("query parameter %s: unsupported matcher", q.Name)
		}
		out.query = append(out.query, qm)
	}
	return out, nil
}

func (m *matcher) matches(req *httpx.Request, q *url.Values) bool {
	path := req.Path()
	switch m.kind {
	case pathRegex:
		if !m.re.MatchString(path) {
			return false
		}
	case pathPrefix:
		if len(path) < len(m.value) {
			return false
		}
		if m.caseSensitive {
			if path[:len(m.value)] != m.value {
				return false
			}
		} else if !strings.EqualFold(path[:len(m.value)], m.value) {
			return false
		}
	case pathExact:
		if m.caseSensitive && path != m.value || !m.caseSensitive && !strings.EqualFold(path, m.value) {
			return false
		}
	case pathSeparatedPrefix:
		if len(path) < len(m.value) {
			return false
		}
		head := path[:len(m.value)]
		if m.caseSensitive && head != m.value || !m.caseSensitive && !strings.EqualFold(head, m.value) {
			return false
		}
		if len(path) > len(m.value) && path[len(m.value)] != '/' {
			return false
		}
	}
	for i := range m.headers {
		h := &m.headers[i]
		v, ok := req.Pseudo(h.name)
		if !ok && h.sm != nil {
			if !h.treatMissing {
				return false
			}
			v, ok = "", true
		}
		match := ok
		if ok && h.sm != nil {
			match = h.sm.Match(v)
		}
		if match == h.invert {
			return false
		}
	}
	if len(m.query) > 0 {
		if *q == nil {
			*q, _ = url.ParseQuery(req.Query())
			if *q == nil {
				*q = url.Values{}
			}
		}
		for i := range m.query {
			qm := &m.query[i]
			vals, ok := (*q)[qm.name]
			if !ok {
				return false
			}
			if qm.sm != nil && !qm.sm.Match(vals[0]) {
				return false
			}
		}
	}
	return true
}

// RetryOn conditions.
const (
	Retry5xx uint32 = 1 << iota
	RetryGatewayError
	RetryReset
	RetryConnectFailure
	RetryRetriable4xx
	RetryRefusedStream
	RetryRetriableStatusCodes
	RetryResetBeforeRequest
	RetryGRPCCancelled
	RetryGRPCDeadlineExceeded
	RetryGRPCInternal
	RetryGRPCResourceExhausted
	RetryGRPCUnavailable
)

var retryOnNames = map[string]uint32{
	"5xx": Retry5xx, "gateway-error": RetryGatewayError, "reset": RetryReset, "connect-failure": RetryConnectFailure,
	"retriable-4xx": RetryRetriable4xx, "refused-stream": RetryRefusedStream, "retriable-status-codes": RetryRetriableStatusCodes,
	"reset-before-request": RetryResetBeforeRequest, "cancelled": RetryGRPCCancelled, "deadline-exceeded": RetryGRPCDeadlineExceeded,
	"internal": RetryGRPCInternal, "resource-exhausted": RetryGRPCResourceExhausted, "unavailable": RetryGRPCUnavailable,
	// Conditions that never fire at this proxy are accepted as no-ops.
	"envoy-ratelimited": 0, "retriable-headers": 0, "http3-post-connect-failure": 0,
}

// RetryPolicy is a compiled retry policy.
type RetryPolicy struct {
	NumRetries            uint32
	On                    uint32
	RetriableStatusCodes  []uint32
	PerTryTimeout         time.Duration
	PreviousHosts         bool
	HostSelectionAttempts int
	BackoffBase           time.Duration
	BackoffMax            time.Duration
}

// Outcome is what one upstream attempt came to, as far as retrying it
// is concerned.
type Outcome int

const (
	// OutcomeResponse: a response arrived; its status and gRPC status
	// decide.
	OutcomeResponse Outcome = iota
	// OutcomeConnectFailure: no connection (or no stream) to the host.
	OutcomeConnectFailure
	// OutcomeTimeout: the per-try timeout ran out before a response.
	OutcomeTimeout
	// OutcomeReset: the connection or stream ended before a response
	// (a reset, or an upstream protocol error).
	OutcomeReset
)

// Retriable is the one place that decides whether an attempt's outcome
// triggers a retry under the policy (nil: never), with Envoy's retry_on
// semantics: 5xx and gateway-error cover connect failures, resets and
// per-try timeouts as well as their statuses (the proxy would answer
// them 503 or 504); reset covers connect failures and resets but not
// timeouts; connect-failure and reset-before-request cover only connect
// failures. Whether a retry is still allowed — retries left, the
// cluster's retry budget, the route's global timeout — is the caller's.
func (p *RetryPolicy) Retriable(o Outcome, status, grpcStatus int) bool {
	if p == nil {
		return false
	}
	switch o {
	case OutcomeResponse:
		return p.RetriableStatus(status, grpcStatus)
	case OutcomeConnectFailure:
		return p.RetriableConnectFailure()
	case OutcomeTimeout:
		return p.On&(Retry5xx|RetryGatewayError) != 0
	default:
		return p.RetriableReset() || p.On&RetryGatewayError != 0
	}
}

// RetriableStatus reports whether a response status triggers a retry.
func (p *RetryPolicy) RetriableStatus(code int, grpcStatus int) bool {
	switch {
	case p.On&Retry5xx != 0 && code >= 500:
		return true
	case p.On&RetryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case p.On&RetryRetriable4xx != 0 && code == 409:
		return true
	}
	if p.On&RetryRetriableStatusCodes != 0 {
		for _, c := range p.RetriableStatusCodes {
			if int(c) == code {
				return true
			}
		}
	}
	switch grpcStatus {
	case 1:
		return p.On&RetryGRPCCancelled != 0
	case 4:
		return p.On&RetryGRPCDeadlineExceeded != 0
	case 13:
		return p.On&RetryGRPCInternal != 0
	case 8:
		return p.On&RetryGRPCResourceExhausted != 0
	case 14:
		return p.On&RetryGRPCUnavailable != 0
	}
	return false
}

// RetriableConnectFailure reports whether a failure to connect (or a
// refused stream) triggers a retry.
func (p *RetryPolicy) RetriableConnectFailure() bool {
	return p.On&(RetryConnectFailure|Retry5xx|RetryGatewayError|RetryReset|RetryResetBeforeRequest) != 0
}

// RetriableReset reports whether an upstream reset after the request was
// sent triggers a retry.
func (p *RetryPolicy) RetriableReset() bool { return p.On&(RetryReset|Retry5xx) != 0 }

func compileRetry(r *routev3.RetryPolicy) (*RetryPolicy, error) {
	p := &RetryPolicy{NumRetries: 1, RetriableStatusCodes: r.RetriableStatusCodes, BackoffBase: 25 * time.Millisecond}
	if r.NumRetries != nil {
		p.NumRetries = r.NumRetries.Value
	}
	for _, c := range strings.Split(r.RetryOn, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		bit, ok := retryOnNames[c]
		if !ok {
			return nil, fmt.Errorf("unsupported retry_on %q", c)
		}
		p.On |= bit
	}
	if r.PerTryTimeout != nil {
		p.PerTryTimeout = r.PerTryTimeout.AsDuration()
	}
	for _, hp := range r.RetryHostPredicate {
		if hp.Name != "envoy.retry_host_predicates.previous_hosts" {
			return nil, fmt.Errorf("unsupported retry host predicate %q", hp.Name)
		}
		p.PreviousHosts = true
	}
	p.HostSelectionAttempts = int(max(r.HostSelectionRetryMaxAttempts, 1))
	if b := r.RetryBackOff; b != nil {
		p.BackoffBase = b.BaseInterval.AsDuration()
		if b.MaxInterval != nil {
			p.BackoffMax = b.MaxInterval.AsDuration()
		}
	}
	if p.BackoffMax == 0 {
		p.BackoffMax = 10 * p.BackoffBase
	}
	return p, nil
}
