package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// RateLimitAnnotation sets Envoy's local rate limit, the way Istio users
// write an EnvoyFilter today but without one: on a VirtualService it
// limits each of its HTTP routes, on a Gateway each virtual host its
// servers carry (a route's limit replaces its host's). Each limited
// route or host owns one token bucket per proxy, shared by all its
// connections.
//
// Grammar: "<requests>/<unit>" with unit s, m or h, optionally followed
// by ",burst=<n>" (the bucket size; default: requests). "100/s" allows
// 100 requests a second; "10/s,burst=50" bursts of 50 refilled at 10 a
// second. Requests over the limit get 429 with x-envoy-ratelimited.
const RateLimitAnnotation = "portico.io/local-rate-limit"

// parseRateLimit reads the annotation value.
func parseRateLimit(v string) (*ir.LocalRateLimit, error) {
	spec, burstPart, hasBurst := strings.Cut(strings.TrimSpace(v), ",")
	n, unit, ok := strings.Cut(strings.TrimSpace(spec), "/")
	if !ok {
		return nil, fmt.Errorf("%q: want <requests>/<s|m|h>[,burst=<n>], e.g. \"100/s\" or \"10/s,burst=50\"", v)
	}
	requests, err := strconv.ParseUint(strings.TrimSpace(n), 10, 32)
	if err != nil || requests == 0 {
		return nil, fmt.Errorf("%q: requests must be a whole number from 1 to 4294967295", v)
	}
	var interval time.Duration
	switch strings.TrimSpace(unit) {
	case "s":
		interval = time.Second
	case "m":
		interval = time.Minute
	case "h":
		interval = time.Hour
	default:
		return nil, fmt.Errorf("%q: the unit must be s, m or h", v)
	}
	burst := requests
	if hasBurst {
		k, bv, ok := strings.Cut(strings.TrimSpace(burstPart), "=")
		if !ok || strings.TrimSpace(k) != "burst" {
			return nil, fmt.Errorf("%q: after the rate, only \",burst=<n>\" is allowed", v)
		}
		burst, err = strconv.ParseUint(strings.TrimSpace(bv), 10, 32)
		if err != nil || burst == 0 {
			return nil, fmt.Errorf("%q: burst must be a whole number from 1 to 4294967295", v)
		}
	}
	return &ir.LocalRateLimit{MaxTokens: uint32(burst), TokensPerFill: uint32(requests), FillInterval: metav1.Duration{Duration: interval}}, nil
}

// rateLimitOf reads an object's annotation, reporting a bad one (which is
// then not used: the rest of the object still is).
func (b *builder) rateLimitOf(obj metav1.Object, key resource.Key, ref ir.Ref) *ir.LocalRateLimit {
	v, ok := obj.GetAnnotations()[RateLimitAnnotation]
	if !ok {
		return nil
	}
	rl, err := parseRateLimit(v)
	if err != nil {
		b.report.Add(key, status.Message{Code: status.InvalidAnnotation, Level: status.Error, Reason: status.ReasonInvalidSpec,
			Field: "metadata.annotations[" + RateLimitAnnotation + "]", Message: err.Error() + "; no rate limit is applied"})
		return nil
	}
	rl.Source = ref
	return rl
}

// markRateLimited adds the local_ratelimit filter to HTTP chains whose
// route configuration limits some host or route.
func markRateLimited(p *ir.Proxy) {
	limited := map[string]bool{}
	for _, rc := range p.RouteConfigs {
		for _, vh := range rc.VirtualHosts {
			if vh.LocalRateLimit != nil {
				limited[rc.Name] = true
			}
			for _, r := range vh.Routes {
				if r.LocalRateLimit != nil {
					limited[rc.Name] = true
				}
			}
		}
	}
	if len(limited) == 0 {
		return
	}
	for _, l := range p.Listeners {
		for _, fc := range l.FilterChains {
			if fc.HTTP != nil && limited[fc.HTTP.RouteConfig] {
				fc.HTTP.LocalRateLimit = true
			}
		}
	}
}
