package telemetry

import (
	"sync"

	"github.com/portico-gateway/portico/pkg/translate"
)

// Class is what the Telemetry resources decide for one gateway class.
type Class struct {
	Tracing       *translate.Tracing
	AccessLogging *translate.AccessLogging
	Metrics       *translate.MetricsOverrides
	// Problems are those of all three, each naming its resource and field.
	Problems []Problem
}

// Resolver resolves the Telemetry of classes against one meshConfig. It
// remembers which access log filters compile: a rebuild resolves every
// class, and compiling a CEL expression costs far more than the rest of
// the merge.
type Resolver struct {
	mesh *Mesh

	mu      sync.Mutex
	filters map[string]error // by expression
}

// maxRememberedFilters bounds the filter memo; past it the memo starts
// over (expressions come from Telemetry resources, a handful in practice).
const maxRememberedFilters = 1024

// NewResolver returns a Resolver for m.
func NewResolver(m *Mesh) *Resolver {
	return &Resolver{mesh: m, filters: map[string]error{}}
}

// Resolve merges the Telemetry resources that apply to scope, once for
// tracing, access logging and metrics.
func (r *Resolver) Resolve(s Scope, tels []Telemetry) Class {
	var c Class
	var tp, ap, mp []Problem
	c.Tracing, tp = Tracing(r.mesh, s, tels)
	c.AccessLogging, ap = accessLogging(r.mesh, s, tels, r.checkFilter)
	c.Metrics, mp = Metrics(r.mesh, s, tels)
	c.Problems = append(append(append(c.Problems, tp...), ap...), mp...)
	return c
}

func (r *Resolver) checkFilter(expr string) error {
	r.mu.Lock()
	err, ok := r.filters[expr]
	r.mu.Unlock()
	if ok {
		return err
	}
	err = compileFilter(expr)
	r.mu.Lock()
	if len(r.filters) >= maxRememberedFilters {
		r.filters = map[string]error{}
	}
	r.filters[expr] = err
	r.mu.Unlock()
	return err
}
