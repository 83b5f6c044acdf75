// Package telemetry turns Istio's telemetry configuration — meshConfig's
// extensionProviders, defaultProviders and enableTracing, and Telemetry
// resources (telemetry.istio.io) — into the tracing a gateway's
// connection managers carry (translate.Tracing), with Istio's precedence:
// a workload-selector Telemetry over the namespace's over the root
// namespace's (mesh-wide), over meshConfig defaults.
package telemetry

import (
	"fmt"
	"sort"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/translate"
)

// DefaultSamplingPercent is Istio's default (meshConfig
// defaultConfig.tracing.sampling unset).
const DefaultSamplingPercent = 1.0

// Mesh is the tracing part of meshConfig.
type Mesh struct {
	// Providers are the tracing extensionProviders by name.
	Providers map[string]*translate.TracingProvider
	// Defaults is defaultProviders.tracing.
	Defaults []string
	// Disabled is enableTracing: false. (A proto3 bool cannot tell false
	// from unset, and Istio's default is true, so the caller sets it from
	// the YAML.)
	Disabled bool
	// Sampling is defaultConfig.tracing.sampling (0 when unset: Istio's
	// default 1% applies).
	Sampling float64

	// AccessLogProviders are the envoyFileAccessLog extensionProviders by
	// name; OtherProviders names the rest (for messages).
	AccessLogProviders map[string]*translate.AccessLog
	OtherProviders     map[string]string
	// AccessLogDefaults is defaultProviders.accessLogging.
	AccessLogDefaults []string
	// MetricsDefaults is defaultProviders.metrics (empty: prometheus,
	// Istio's default).
	MetricsDefaults []string
	// MeshAccessLog is meshConfig's accessLogFile/Encoding/Format, which
	// the built-in "envoy" provider formats with (nil: Envoy's default).
	MeshAccessLog *translate.AccessLog
}

// FromMeshConfig reads the tracing part of a MeshConfig. Providers of
// kinds Portico does not export to are an error naming them only when
// something selects them (Resolve), as istiod ignores unused ones.
func FromMeshConfig(mc *meshv1alpha1.MeshConfig) (*Mesh, error) {
	m := &Mesh{Providers: map[string]*translate.TracingProvider{}, Defaults: mc.GetDefaultProviders().GetTracing(),
		AccessLogProviders: map[string]*translate.AccessLog{}, OtherProviders: map[string]string{},
		AccessLogDefaults: mc.GetDefaultProviders().GetAccessLogging(), MetricsDefaults: mc.GetDefaultProviders().GetMetrics()}
	m.Sampling = mc.GetDefaultConfig().GetTracing().GetSampling()
	if m.Sampling < 0 || m.Sampling > 100 {
		return nil, fmt.Errorf("defaultConfig.tracing.sampling: %v is not within 0..100", m.Sampling)
	}
	for i, p := range mc.GetExtensionProviders() {
		var tp *translate.TracingProvider
		switch {
		case p.GetOpentelemetry() != nil:
			o := p.GetOpentelemetry()
			tp = &translate.TracingProvider{Name: p.Name, Kind: "opentelemetry", Service: serviceHost(o.Service), Port: o.Port,
				MaxTagLength: o.MaxTagLength}
			if h := o.GetHttp(); h != nil {
				tp.HTTP, tp.Path, tp.Timeout = true, h.Path, h.GetTimeout().AsDuration()
				if tp.Path != "" && !strings.HasPrefix(tp.Path, "/") {
					tp.Path = "/" + tp.Path
				}
			}
			if g := o.GetGrpc(); g != nil {
				tp.Timeout = g.GetTimeout().AsDuration()
			}
		case p.GetZipkin() != nil:
			z := p.GetZipkin()
			tp = &translate.TracingProvider{Name: p.Name, Kind: "zipkin", Service: serviceHost(z.Service), Port: z.Port,
				MaxTagLength: z.MaxTagLength, Path: z.Path}
		case p.GetEnvoyFileAccessLog() != nil:
			al, err := fileAccessLogProvider(p.GetEnvoyFileAccessLog())
			if err != nil {
				return nil, fmt.Errorf("extensionProviders[%d] %q: envoyFileAccessLog: %w", i, p.Name, err)
			}
			m.AccessLogProviders[p.Name] = al
			continue
		default:
			m.OtherProviders[p.Name] = providerKind(p)
			continue
		}
		if err := (&translate.Tracing{Provider: tp}).Validate(); err != nil {
			return nil, fmt.Errorf("extensionProviders[%d]: %w", i, err)
		}
		m.Providers[p.Name] = tp
	}
	return m, nil
}

// serviceHost reduces Istio's "namespace/host" service form to the host.
func serviceHost(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Scope says which proxies a Telemetry resource applies to.
type Scope struct {
	// RootNamespace is the mesh's root namespace (istio-system).
	RootNamespace string
	// Namespace and Labels are the gateway proxy's.
	Namespace string
	Labels    map[string]string
}

// Telemetry is a Telemetry resource with its name, for messages.
type Telemetry struct {
	Namespace, Name string
	Spec            *telemetryv1alpha1.Telemetry
}

// Problem is a Telemetry resource that cannot be honoured (in part),
// with the field named. Name is empty for a problem of meshConfig's own
// defaults.
type Problem struct {
	Namespace, Name string
	// Field is the path in the resource (spec.tracing[0].providers[0]).
	Field   string
	Message string
	Kind    ProblemKind
}

// ProblemKind says what kind of problem it is, for status codes.
type ProblemKind int

// Problem kinds.
const (
	// Invalid: the value breaks a rule (out of range, does not compile).
	Invalid ProblemKind = iota
	// NotFound: a provider meshConfig does not define.
	NotFound
	// Unsupported: valid in Istio, not honoured by Portico.
	Unsupported
)

// Status is the problem as a status message on its resource, with
// Istio's codes: IST0106 for an invalid value, IST0101 for a provider
// meshConfig does not define, PTC0001 for what Portico does not honour.
func (p Problem) Status() status.Message {
	m := status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec,
		Field: p.Field, Message: p.Message}
	switch p.Kind {
	case NotFound:
		m.Code, m.Reason = status.ReferencedResourceNotFound, status.ReasonProviderNotFound
	case Unsupported:
		m.Code, m.Reason = status.UnsupportedAtGateway, status.ReasonUnsupported
	}
	return m
}

func (p Problem) Error() string {
	msg := p.Message
	if p.Field != "" {
		msg = p.Field + ": " + msg
	}
	if p.Name == "" {
		return msg // meshConfig's, not a resource's
	}
	return p.Namespace + "/" + p.Name + ": " + msg
}

// applicable returns the Telemetry resources that apply to the scope,
// least specific first (root mesh-wide, namespace-wide, workload
// selector), each level ordered by name so the result is stable; Istio
// uses the oldest when several compete at a level, Portico the first name.
func applicable(s Scope, tels []Telemetry) []Telemetry {
	root := s.RootNamespace
	if root == "" {
		root = "istio-system"
	}
	var levels [3][]Telemetry
	for _, t := range tels {
		sel := t.Spec.GetSelector().GetMatchLabels()
		switch {
		case len(sel) > 0:
			if t.Namespace != s.Namespace || !matches(sel, s.Labels) {
				continue
			}
			levels[2] = append(levels[2], t)
		case t.Namespace == root:
			levels[0] = append(levels[0], t)
		case t.Namespace == s.Namespace:
			levels[1] = append(levels[1], t)
		}
	}
	var out []Telemetry
	for _, l := range levels {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
		if len(l) > 0 {
			out = append(out, l[0])
		}
	}
	return out
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Tracing resolves the gateway's tracing: meshConfig defaults, then each
// applicable Telemetry's tracing (less specific first) overriding the
// fields it sets. It returns nil when tracing is off (enableTracing
// false, or no provider selected and span reporting not disabled
// explicitly). Problems name Telemetry fields that were ignored.
func Tracing(m *Mesh, s Scope, tels []Telemetry) (*translate.Tracing, []Problem) {
	if m == nil {
		m = &Mesh{}
	}
	if m.Disabled {
		return nil, nil
	}
	providers := m.Defaults
	var providersFrom *Problem // the resource and field that chose providers
	sampling := m.Sampling
	if sampling == 0 {
		sampling = DefaultSamplingPercent
	}
	disabled := false
	tags := map[string]translate.TracingTag{}
	var problems []Problem
	for _, t := range applicable(s, tels) {
		for i, tr := range t.Spec.GetTracing() {
			field := fmt.Sprintf("spec.tracing[%d]", i)
			if mode := tr.GetMatch().GetMode(); mode == telemetryv1alpha1.WorkloadMode_SERVER {
				// A gateway's spans are client-side in Istio's terms
				// only for sidecars; SERVER-only config does not apply.
				continue
			}
			if len(tr.Providers) > 0 {
				providers = nil
				for _, p := range tr.Providers {
					providers = append(providers, p.Name)
				}
				providersFrom = &Problem{Namespace: t.Namespace, Name: t.Name, Field: field + ".providers[0]"}
			}
			if v := tr.GetRandomSamplingPercentage(); v != nil {
				if v.Value < 0 || v.Value > 100 || v.Value != v.Value {
					problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: field + ".randomSamplingPercentage", Message: "must be within 0..100"})
				} else {
					sampling = v.Value
				}
			}
			if v := tr.GetDisableSpanReporting(); v != nil {
				disabled = v.Value
			}
			for name, ct := range tr.GetCustomTags() {
				switch {
				case ct.GetLiteral() != nil:
					tags[name] = translate.TracingTag{Name: name, Literal: ct.GetLiteral().Value}
				case ct.GetHeader() != nil:
					tags[name] = translate.TracingTag{Name: name, Header: strings.ToLower(ct.GetHeader().Name), Default: ct.GetHeader().DefaultValue}
				case ct.GetEnvironment() != nil:
					tags[name] = translate.TracingTag{Name: name, Environment: ct.GetEnvironment().Name, Default: ct.GetEnvironment().DefaultValue}
				default:
					problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: fmt.Sprintf("%s.customTags[%s]", field, name),
						Message: "only literal, header and environment are supported", Kind: Unsupported})
				}
			}
		}
	}
	out := &translate.Tracing{SamplingPercent: sampling}
	names := make([]string, 0, len(tags))
	for n := range tags {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out.Tags = append(out.Tags, tags[n])
	}
	if disabled {
		return out, problems // propagate, never report
	}
	if len(providers) == 0 {
		return nil, problems
	}
	// Envoy takes one tracer per connection manager; istiod uses the
	// first provider too.
	p, ok := m.Providers[providers[0]]
	if !ok {
		pr := Problem{Field: "defaultProviders.tracing[0]"}
		if providersFrom != nil {
			pr = *providersFrom
		}
		pr.Kind = NotFound
		pr.Message = fmt.Sprintf("tracing provider %q is not a meshConfig extensionProviders entry of kind opentelemetry or zipkin", providers[0])
		problems = append(problems, pr)
		return nil, problems
	}
	out.Provider = p
	return out, problems
}
