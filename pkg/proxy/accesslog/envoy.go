package accesslog

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Logger names Envoy uses for the loggers the proxy implements.
const (
	StdoutLogger = "envoy.access_loggers.stdout"
	FileLogger   = "envoy.access_loggers.file"
)

// FromEnvoy compiles an HCM's or TCP proxy's access_log list. Anything the
// proxy cannot honour (another logger, an unknown command operator, a
// format from a file) is an error, so the listener is NACKed rather than
// logged differently from what was asked.
func FromEnvoy(logs []*accesslogv3.AccessLog) ([]Target, error) {
	var out []Target
	for i, a := range logs {
		t, err := fromEnvoy(a)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d] %q: %w", i, a.GetName(), err)
		}
		out = append(out, t)
	}
	return out, nil
}

func fromEnvoy(a *accesslogv3.AccessLog) (Target, error) {
	t, err := fromEnvoyLogger(a)
	if err != nil {
		return Target{}, err
	}
	if a.GetFilter() != nil {
		if t.Filter, err = filterFromEnvoy(a.GetFilter()); err != nil {
			return Target{}, err
		}
	}
	return t, nil
}

// filterFromEnvoy compiles an access log filter: the CEL extension
// filter istiod emits for Telemetry's accessLogging[].filter. Envoy's
// other filters are NACKed rather than ignored (ignoring one would log
// what the user filtered out).
func filterFromEnvoy(f *accesslogv3.AccessLogFilter) (*Filter, error) {
	ext := f.GetExtensionFilter()
	if ext == nil {
		return nil, fmt.Errorf("filter: only the %s extension filter is supported", CELFilterName)
	}
	m, err := ext.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", ext.GetName(), err)
	}
	c, ok := m.(*celv3.ExpressionFilter)
	if !ok {
		return nil, fmt.Errorf("filter %q: unsupported type %s", ext.GetName(), ext.GetTypedConfig().GetTypeUrl())
	}
	return CompileFilter(c.GetExpression())
}

func fromEnvoyLogger(a *accesslogv3.AccessLog) (Target, error) {
	tc := a.GetTypedConfig()
	if tc == nil {
		if a.GetName() == StdoutLogger {
			return Target{}, nil
		}
		return Target{}, fmt.Errorf("unsupported access logger (no typed_config)")
	}
	m, err := tc.UnmarshalNew()
	if err != nil {
		return Target{}, fmt.Errorf("unsupported access logger %s", tc.GetTypeUrl())
	}
	var t Target
	var sf *corev3.SubstitutionFormatString
	switch c := m.(type) {
	case *streamv3.StdoutAccessLog:
		sf = c.GetLogFormat()
	case *filev3.FileAccessLog:
		if c.GetPath() == "" {
			return Target{}, fmt.Errorf("file access log: path is required")
		}
		if c.GetAccessLogFormat() != nil && c.GetLogFormat() == nil {
			return Target{}, fmt.Errorf("file access log: only log_format is supported (not the deprecated format/json_format)")
		}
		t.Path = c.GetPath()
		sf = c.GetLogFormat()
	default:
		return Target{}, fmt.Errorf("unsupported access logger %s", tc.GetTypeUrl())
	}
	if sf == nil {
		return t, nil
	}
	if t.Format, err = compileSubstitution(sf); err != nil {
		return Target{}, err
	}
	t.RespHeaders = t.Format.RespHeaders()
	return t, nil
}

func compileSubstitution(sf *corev3.SubstitutionFormatString) (*Compiled, error) {
	if sf.GetOmitEmptyValues() || sf.GetContentType() != "" || len(sf.GetFormatters()) > 0 || sf.GetJsonFormatOptions() != nil {
		return nil, fmt.Errorf("log_format: only text_format_source (inline_string) and json_format are supported")
	}
	switch f := sf.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormatSource:
		src, ok := f.TextFormatSource.GetSpecifier().(*corev3.DataSource_InlineString)
		if !ok {
			return nil, fmt.Errorf("log_format.text_format_source: only inline_string is supported")
		}
		return CompileText(src.InlineString)
	case *corev3.SubstitutionFormatString_JsonFormat:
		fields := map[string]string{}
		for k, v := range f.JsonFormat.GetFields() {
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("log_format.json_format key %q: only string values are supported", k)
			}
			fields[k] = s.StringValue
		}
		return CompileJSON(fields)
	}
	return nil, fmt.Errorf("log_format: only text_format_source (inline_string) and json_format are supported")
}
