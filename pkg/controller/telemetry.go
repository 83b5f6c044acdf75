package controller

import (
	"slices"
	"sort"
	"strings"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/status"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/telemetry"
)

// telemetryFor is what Telemetry decides for a class: meshConfig's
// tracing overridden by the Telemetry resources that apply to the class's
// pods, their access logging (nil: meshConfig's access log,
// translate.Options.AccessLog, applies) and metrics overrides (nil:
// none) — or, without Options.Mesh, the static
// translate.Options.Tracing alone.
func (c *Controller) telemetryFor(res *resource.Resources, p *ir.Proxy) telemetry.Class {
	if c.opts.Mesh == nil {
		return telemetry.Class{Tracing: c.opts.Translate.Tracing}
	}
	if c.telemetry == nil {
		c.telemetry = telemetry.NewResolver(c.opts.Mesh)
	}
	scope, tels := c.telemetryScope(res, p)
	tc := c.telemetry.Resolve(scope, tels)
	c.logTelemetryProblems(p, tc.Problems)
	return tc
}

// withTelemetryStatuses gives every Telemetry resource a status (the
// gateway binder does not read them): Accepted, or partly in use with a
// message per problem found while building any class, naming the field.
// The result is copied, never modified.
func withTelemetryStatuses(result *gateway.Result, res *resource.Resources, problems []telemetry.Problem) *gateway.Result {
	if len(res.Telemetries) == 0 {
		return result
	}
	r := status.NewReport()
	for _, t := range res.Telemetries {
		r.Track(resource.KeyOf(t), t.Generation)
	}
	for _, pr := range problems {
		if pr.Name == "" {
			continue // meshConfig's own: logged only
		}
		key := resource.Key{Kind: resource.KindTelemetry, Namespace: pr.Namespace, Name: pr.Name}
		if r.Get(key) == nil {
			continue
		}
		r.Add(key, pr.Status())
	}
	out := *result
	out.Statuses = append(slices.Clone(result.Statuses), r.Finalize()...)
	sort.SliceStable(out.Statuses, func(i, j int) bool { return status.Less(out.Statuses[i].Key, out.Statuses[j].Key) })
	return &out
}

// telemetryScope is the class's pods as Telemetry selects them. The pods'
// namespace is taken to be that of the class's oldest Gateway (gateways
// live with their pods in Istio's usual installs), else the root
// namespace.
func (c *Controller) telemetryScope(res *resource.Resources, p *ir.Proxy) (telemetry.Scope, []telemetry.Telemetry) {
	root := c.opts.RootNamespace
	if root == "" {
		root = "istio-system"
	}
	ns := root
	if len(p.Gateways) > 0 {
		if i := strings.IndexByte(p.Gateways[0], '/'); i > 0 {
			ns = p.Gateways[0][:i]
		}
	}
	tels := make([]telemetry.Telemetry, 0, len(res.Telemetries))
	for _, t := range res.Telemetries {
		tels = append(tels, telemetry.Telemetry{Namespace: t.Namespace, Name: t.Name, Spec: &t.Spec})
	}
	return telemetry.Scope{RootNamespace: root, Namespace: ns, Labels: p.Labels}, tels
}

// logTelemetryProblems logs each Telemetry problem once per message.
func (c *Controller) logTelemetryProblems(p *ir.Proxy, problems []telemetry.Problem) {
	for _, pr := range problems {
		msg := pr.Error()
		if !c.telemetryLogged[msg] {
			if c.telemetryLogged == nil {
				c.telemetryLogged = map[string]bool{}
			}
			c.telemetryLogged[msg] = true
			c.log.Error(nil, "Telemetry not honoured", "problem", msg, "class", p.Name)
		}
	}
}
