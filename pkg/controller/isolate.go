package controller

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/telemetry"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// maxAttempts bounds the builds one update may take to isolate resources
// whose configuration Envoy rejects (the first build included). The binder
// catches the common cases itself; this is the safety net for the rest.
const maxAttempts = 8

// attempt is one build of every wanted class — bound, translated,
// versioned and validated — not yet published.
type attempt struct {
	result *gateway.Result
	bound  time.Time
	// translating and preparing are the time spent translating (with the
	// stream's encoding and validation) and preparing snapshots, summed
	// over classes.
	translating, preparing time.Duration
	prepared               map[string]*xds.Prepared
	// attempts is how many builds isolate needed (set on the one it returns).
	attempts int
	// errs holds the classes that cannot be published.
	errs map[string]error
	// problems are the failures that name resources to blame.
	problems []*problem
	ids      map[string]bool
	// telemetry are the Telemetry problems found for any class.
	telemetry []telemetry.Problem
}

// problem is one part of one class's snapshot that breaks Envoy's rules.
type problem struct {
	id string
	// candidates are the resources it was made from that can be left
	// out, most specific first, none of them already excluded.
	candidates []resource.Key
	msg        status.Message
}

// isolate builds until every class's snapshot passes Envoy's validation
// rules or nothing more can be blamed: the resources a failing part was
// made from are left out (gateway.Options.Exclude) and everything is
// built again, so the snapshots published are, by construction, those of
// the configuration without them. When a failing part has several
// sources (a filter chain of a Gateway and a VirtualService, a cluster of
// a Service and a DestinationRule), the most specific one whose exclusion
// alone removes the failure is chosen. The result is a function of the
// resources only, not of earlier builds.
func (c *Controller) isolate(res *resource.Resources, classes []map[string]string, wanted map[string]bool) (*attempt, map[resource.Key]status.Message) {
	exclude := map[resource.Key]status.Message{}
	att := c.attempt(res, classes, wanted, exclude)
	attempts := 1
	for len(att.problems) > 0 && attempts < maxAttempts {
		next := maps.Clone(exclude)
		grew := false
		for _, p := range att.problems {
			if anyIn(p.candidates, next) {
				continue // another failure's exclusion may already fix it
			}
			chosen := p.candidates
			if len(p.candidates) > 1 {
				for _, cand := range p.candidates {
					if attempts >= maxAttempts-1 {
						break // no budget left to tell them apart: all go
					}
					trial := maps.Clone(next)
					trial[cand] = p.msg
					t := c.attempt(res, classes, wanted, trial)
					attempts++
					if !t.ids[p.id] {
						chosen = []resource.Key{cand}
						break
					}
				}
			}
			for _, k := range chosen {
				next[k] = p.msg
			}
			grew = true
		}
		if !grew {
			break
		}
		exclude = next
		att = c.attempt(res, classes, wanted, exclude)
		attempts++
	}
	att.attempts = attempts
	return att, exclude
}

func anyIn(keys []resource.Key, set map[resource.Key]status.Message) bool {
	for _, k := range keys {
		if _, ok := set[k]; ok {
			return true
		}
	}
	return false
}

// attempt binds without the excluded resources, then translates and
// prepares every wanted class.
func (c *Controller) attempt(res *resource.Resources, classes []map[string]string, wanted map[string]bool, exclude map[resource.Key]status.Message) *attempt {
	result := c.builder.Build(res, gateway.Options{Classes: classes, ProxiesKnown: true, DomainSuffix: c.opts.DomainSuffix, Exclude: exclude,
		RootNamespace: c.opts.RootNamespace, JWKS: c.jwks, GatewayAPI: c.opts.GatewayAPI})
	att := &attempt{result: result, bound: time.Now(), prepared: map[string]*xds.Prepared{}, errs: map[string]error{}, ids: map[string]bool{}}
	for _, p := range result.Proxies {
		// Telemetry is resolved for every class, so its problems reach
		// the resources' status before any proxy connects.
		tc := c.telemetryFor(res, p)
		att.telemetry = append(att.telemetry, tc.Problems...)
		if !wanted[p.Name] {
			continue
		}
		t, ok := c.translators[p.Name]
		if !ok {
			t = translate.NewTranslator(c.opts.Translate)
			c.translators[p.Name] = t
		}
		t.SetTracing(tc.Tracing)
		t.SetAccessLogging(tc.AccessLogging)
		t.SetMetrics(tc.Metrics)
		// New messages are encoded, validated and replaced by compact
		// stand-ins while they are translated, not all at the end.
		stream := c.xds.Stream(p.Name)
		t0 := time.Now()
		tr, err := t.TranslateStream(p, stream.Compact)
		t1 := time.Now()
		att.translating += t1.Sub(t0)
		if err != nil {
			att.errs[p.Name] = fmt.Errorf("translating: %w", err)
			continue
		}
		prep, err := c.xds.PrepareStream(p.Name, tr, stream)
		att.preparing += time.Since(t1)
		if err != nil {
			att.errs[p.Name] = err
			var invalid *xds.InvalidError
			if errors.As(err, &invalid) {
				for _, xp := range invalid.Problems {
					pr := blamed(p, xp, exclude)
					if pr != nil && !att.ids[pr.id] {
						att.ids[pr.id] = true
						att.problems = append(att.problems, pr)
					}
				}
			}
			continue
		}
		att.prepared[p.Name] = prep
	}
	return att
}

// blamed turns a snapshot problem into the resources to blame, or nil
// when none can be (the class then keeps its previous snapshot).
func blamed(p *ir.Proxy, xp *xds.Problem, exclude map[resource.Key]status.Message) *problem {
	sources := xp.Sources
	if len(sources) == 0 {
		sources = irSources(p, xp)
	}
	var cands []resource.Key
	for _, s := range sources {
		var ref ir.Ref
		if err := ref.UnmarshalText([]byte(s)); err != nil {
			continue
		}
		if _, ok := blameOrder[ref.Kind]; !ok {
			continue
		}
		key := resource.Key{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
		if _, done := exclude[key]; !done {
			cands = append(cands, key)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	sort.SliceStable(cands, func(i, j int) bool { return blameOrder[cands[i].Kind] < blameOrder[cands[j].Kind] })
	return &problem{
		id:         p.Name + "\x00" + xp.Type + "\x00" + xp.Name + "\x00" + xp.Where,
		candidates: cands,
		msg: status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonEnvoyValidation,
			Message: fmt.Sprintf("Envoy's validation rules reject the %s made from this resource (%s: %s), so it is not used; everything else is published",
				xp.Part(), xp.Path, xp.Rule)},
	}
}

// blameOrder ranks the kinds a failure can be blamed on, most specific
// first: a VirtualService is one host's routes, a Gateway everybody's
// ports.
var blameOrder = map[string]int{
	resource.KindAuthorizationPolicy:   -2,
	resource.KindRequestAuthentication: -1,
	resource.KindVirtualService:        0,
	resource.KindDestinationRule:       1,
	resource.KindServiceEntry:          2,
	resource.KindSecret:                3,
	resource.KindService:               4,
	resource.KindGateway:               5,
}

// irSources finds where resources without source metadata (endpoints,
// secrets) came from in the IR.
func irSources(p *ir.Proxy, xp *xds.Problem) []string {
	var refs []ir.Ref
	switch xp.Type {
	case xds.EndpointType:
		for _, c := range p.Clusters {
			if c.Name == xp.Name {
				refs = c.Sources
			}
		}
	case xds.SecretType:
		for _, s := range p.Secrets {
			if s.Name == xp.Name {
				refs = s.Sources
			}
		}
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.String()
	}
	return out
}
