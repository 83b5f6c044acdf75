package telemetry

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/translate"
)

// BuiltinAccessLogProvider is the provider istiod defines in every mesh:
// a file logger at /dev/stdout formatted by meshConfig's accessLogEncoding
// and accessLogFormat.
const BuiltinAccessLogProvider = "envoy"

// fileAccessLogProvider is an envoyFileAccessLog provider as istiod
// writes it: path (default /dev/stdout), logFormat.text (a newline
// appended) or logFormat.labels (JSON), else Istio's text format.
func fileAccessLogProvider(p *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider) (*translate.AccessLog, error) {
	al := &translate.AccessLog{File: p.GetPath()}
	if al.File == "" {
		al.File = "/dev/stdout"
	}
	if p.GetOmitEmptyValues() {
		return nil, fmt.Errorf("omitEmptyValues is not supported")
	}
	switch {
	case p.GetLogFormat().GetLabels() != nil:
		al.Encoding = "JSON"
		al.Labels = map[string]string{}
		for k, v := range p.GetLogFormat().GetLabels().GetFields() {
			sv, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("logFormat.labels[%s]: values must be strings", k)
			}
			al.Labels[k] = sv.StringValue
		}
	case p.GetLogFormat().GetText() != "":
		al.Format = p.GetLogFormat().GetText()
	default:
		al.Format = translate.IstioTextFormat
	}
	return al, nil
}

func providerKind(p *meshv1alpha1.MeshConfig_ExtensionProvider) string {
	switch {
	case p.GetEnvoyHttpAls() != nil:
		return "envoyHttpAls"
	case p.GetEnvoyTcpAls() != nil:
		return "envoyTcpAls"
	case p.GetEnvoyOtelAls() != nil:
		return "envoyOtelAls"
	case p.GetPrometheus() != nil:
		return "prometheus"
	case p.GetStackdriver() != nil:
		return "stackdriver"
	}
	return "another kind"
}

// loggingSpec is one provider's merged setting.
type loggingSpec struct {
	disabled bool
	filter   string
	from     Telemetry // the resource that set the filter, for messages
	field    string
}

// namedAt is where a provider was named, for messages.
type namedAt struct {
	t     Telemetry
	field string
}

// AccessLogging resolves the gateway's access logging from the Telemetry
// resources that apply to it, with istiod's merge (pilot's mergeLogs): a
// gateway is a CLIENT workload; each level's providers replace the less
// specific level's, an entry without providers applies to the inherited
// ones, `disabled` turns a provider off, and the filter of the most
// specific entry naming a provider is its filter. It returns nil when no
// Telemetry sets accessLogging and meshConfig has no
// defaultProviders.accessLogging: meshConfig's accessLogFile applies, as
// in Istio. Problems name what was ignored: an unknown provider, a kind
// Portico cannot log to, a filter the proxy cannot compile.
func AccessLogging(m *Mesh, s Scope, tels []Telemetry) (*translate.AccessLogging, []Problem) {
	return accessLogging(m, s, tels, compileFilter)
}

// compileFilter reports whether the proxy can compile an access log
// filter expression.
func compileFilter(expr string) error {
	_, err := accesslog.CompileFilter(expr)
	return err
}

func accessLogging(m *Mesh, s Scope, tels []Telemetry, checkFilter func(string) error) (*translate.AccessLogging, []Problem) {
	if m == nil {
		m = &Mesh{}
	}
	type entry struct {
		t     Telemetry
		i     int
		l     *telemetryv1alpha1.AccessLogging
		names []string
	}
	var levels [][]entry
	for _, t := range applicable(s, tels) {
		var lv []entry
		for i, l := range t.Spec.GetAccessLogging() {
			var names []string
			for _, p := range l.GetProviders() {
				names = append(names, p.GetName())
			}
			lv = append(lv, entry{t: t, i: i, l: l, names: names})
		}
		if len(lv) > 0 {
			levels = append(levels, lv)
		}
	}
	if len(levels) == 0 && len(m.AccessLogDefaults) == 0 {
		return nil, nil
	}
	clientMode := func(l *telemetryv1alpha1.AccessLogging) bool {
		sel := l.GetMatch()
		return sel == nil || sel.GetMode() == telemetryv1alpha1.WorkloadMode_CLIENT_AND_SERVER ||
			sel.GetMode() == telemetryv1alpha1.WorkloadMode_CLIENT
	}
	specs := map[string]loggingSpec{}
	named := map[string]namedAt{}
	if len(levels) == 0 {
		for _, p := range m.AccessLogDefaults {
			specs[p] = loggingSpec{}
		}
	} else {
		// Which providers are in scope: those the most specific level
		// naming any chose, else the defaults; and each one's filter.
		inScope := m.AccessLogDefaults
		filters := map[string]loggingSpec{}
		for _, lv := range levels {
			var names []string
			for _, e := range lv {
				if !clientMode(e.l) {
					continue
				}
				names = append(names, e.names...)
				for _, p := range e.names {
					filters[p] = loggingSpec{filter: e.l.GetFilter().GetExpression(), from: e.t,
						field: fmt.Sprintf("spec.accessLogging[%d].filter.expression", e.i)}
				}
			}
			if len(names) > 0 {
				inScope = names
			}
		}
		for _, lv := range levels {
			for _, e := range lv {
				for j, p := range e.names {
					named[p] = namedAt{e.t, fmt.Sprintf("spec.accessLogging[%d].providers[%d]", e.i, j)}
				}
			}
		}
		scope := map[string]bool{}
		for _, p := range inScope {
			scope[p] = true
		}
		parent := m.AccessLogDefaults
		for _, lv := range levels {
			for _, e := range lv {
				names := e.names
				if len(names) == 0 {
					names = parent
				}
				parent = names
				for _, p := range names {
					if !scope[p] || !clientMode(e.l) {
						continue
					}
					if e.l.GetDisabled().GetValue() {
						specs[p] = loggingSpec{disabled: true}
						continue
					}
					specs[p] = filters[p]
				}
			}
		}
	}
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	out := &translate.AccessLogging{}
	var problems []Problem
	for _, n := range names {
		sp := specs[n]
		if sp.disabled {
			continue
		}
		al := m.accessLogProvider(n)
		if al == nil {
			pr := Problem{Field: "defaultProviders.accessLogging", Kind: NotFound,
				Message: fmt.Sprintf("access logging provider %q is not a meshConfig extensionProviders entry", n)}
			if at, ok := named[n]; ok {
				pr.Namespace, pr.Name, pr.Field = at.t.Namespace, at.t.Name, at.field
			}
			if k, ok := m.otherProvider(n); ok {
				pr.Kind = Unsupported
				pr.Message = fmt.Sprintf("access logging provider %q is of kind %s; Portico logs to envoyFileAccessLog providers only", n, k)
			}
			problems = append(problems, pr)
			continue
		}
		cp := *al
		if sp.filter != "" {
			if err := checkFilter(sp.filter); err != nil {
				problems = append(problems, Problem{Namespace: sp.from.Namespace, Name: sp.from.Name, Field: sp.field,
					Message: fmt.Sprintf("%v (provider %q not logging)", err, n)})
				continue
			}
			cp.Filter = sp.filter
		}
		out.Logs = append(out.Logs, &cp)
	}
	return out, problems
}

// accessLogProvider finds a provider by name, case-insensitively as
// istiod does; "envoy" is built in unless meshConfig redefines it.
func (m *Mesh) accessLogProvider(name string) *translate.AccessLog {
	for n, al := range m.AccessLogProviders {
		if strings.EqualFold(n, name) {
			if strings.EqualFold(n, BuiltinAccessLogProvider) && al.Format == translate.IstioTextFormat && m.MeshAccessLog != nil {
				// The built-in provider without logFormat takes
				// meshConfig's encoding and format.
				return &translate.AccessLog{File: al.File, Encoding: m.MeshAccessLog.Encoding, Format: m.MeshAccessLog.Format}
			}
			return al
		}
	}
	if strings.EqualFold(name, BuiltinAccessLogProvider) {
		if m.MeshAccessLog != nil {
			return &translate.AccessLog{File: "/dev/stdout", Encoding: m.MeshAccessLog.Encoding, Format: m.MeshAccessLog.Format}
		}
		return &translate.AccessLog{File: "/dev/stdout"}
	}
	return nil
}

func (m *Mesh) otherProvider(name string) (string, bool) {
	for n, k := range m.OtherProviders {
		if strings.EqualFold(n, name) {
			return k, true
		}
	}
	for n := range m.Providers {
		if strings.EqualFold(n, name) {
			return "tracing (" + m.Providers[n].Kind + ")", true
		}
	}
	return "", false
}
