package translate

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// FileAccessLog is Envoy's file access logger, which istiod configures
// for meshConfig.accessLogFile.
const FileAccessLog = "envoy.access_loggers.file"

// AccessLog is meshConfig's access log, in Istio's terms.
type AccessLog struct {
	// File is accessLogFile: a path or /dev/stdout; empty turns access
	// logs off, as in Istio.
	File string
	// Encoding is accessLogEncoding: TEXT (default) or JSON.
	Encoding string
	// Format is accessLogFormat: Envoy command operators; for JSON, an
	// object of string values. Empty: Envoy's default text format, or
	// Istio's default JSON keys.
	Format string
	// Labels is an envoyFileAccessLog provider's logFormat.labels: JSON
	// keys and their operators (Encoding is then JSON).
	Labels map[string]string
	// Filter is a Telemetry accessLogging[].filter.expression (CEL): only
	// entries it is true for are logged.
	Filter string
}

// AccessLogging is the access logging Telemetry resources select for a
// gateway (Istio's Telemetry API). When set it replaces meshConfig's
// access log; no Logs means none.
type AccessLogging struct {
	Logs []*AccessLog
}

// CELAccessLogFilter is Envoy's name for the CEL access log filter.
const CELAccessLogFilter = "envoy.access_loggers.extension_filters.cel"

// IstioTextFormat is the text format istiod writes for an
// envoyFileAccessLog provider without logFormat (EnvoyTextLogFormat).
const IstioTextFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% " +
	"%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% " +
	"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% " +
	"\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% " +
	"%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" " +
	"\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" " +
	"%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% " +
	"%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

// IstioJSONFormat are the keys and operators of Istio's default JSON
// access log (EnvoyJSONLogFormatIstio).
var IstioJSONFormat = map[string]string{
	"start_time":                        "%START_TIME%",
	"route_name":                        "%ROUTE_NAME%",
	"method":                            "%REQ(:METHOD)%",
	"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                          "%PROTOCOL%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_flags":                    "%RESPONSE_FLAGS%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
	"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
	"user_agent":                        "%REQ(USER-AGENT)%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"authority":                         "%REQ(:AUTHORITY)%",
	"upstream_host":                     "%UPSTREAM_HOST%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"requested_server_name":             "%REQUESTED_SERVER_NAME%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

// Validate checks the encoding and, for JSON, that the format is an
// object of strings. Operators are checked by the proxy, which NACKs what
// it does not implement.
func (a *AccessLog) Validate() error {
	switch a.Encoding {
	case "", "TEXT", "JSON":
	default:
		return fmt.Errorf("accessLogEncoding: want TEXT or JSON, got %q", a.Encoding)
	}
	if a.Encoding == "JSON" && a.Format != "" {
		if _, err := jsonFormat(a.Format); err != nil {
			return err
		}
	}
	return nil
}

func jsonFormat(f string) (*structpb.Struct, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(f), &m); err != nil {
		return nil, fmt.Errorf("accessLogFormat: with accessLogEncoding JSON it must be a JSON object: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := m[k].(string); !ok {
			return nil, fmt.Errorf("accessLogFormat: key %q: values must be strings", k)
		}
	}
	return structpb.NewStruct(m)
}

// accessLog is the HCM's and tcp_proxy's access_log, as istiod builds it
// from meshConfig: a file logger at accessLogFile with a text format
// (text_format_source inline_string, a trailing newline added) or a JSON
// dictionary. Without meshConfig access log options, the stdout logger in
// Envoy's default format, as before.
func (t *translator) accessLog() []*accesslogv3.AccessLog {
	if al := t.opts.AccessLogging; al != nil {
		var out []*accesslogv3.AccessLog
		for _, a := range al.Logs {
			if a.File != "" {
				out = append(out, fileAccessLog(a))
			}
		}
		return out
	}
	a := t.opts.AccessLog
	if a == nil {
		if t.opts.DisableAccessLog {
			return nil
		}
		return []*accesslogv3.AccessLog{{
			Name:       StdoutAccessLog,
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: toAny(&streamv3.StdoutAccessLog{})},
		}}
	}
	if a.File == "" {
		return nil
	}
	return []*accesslogv3.AccessLog{fileAccessLog(a)}
}

// fileAccessLog is one file logger, with its CEL filter as istiod
// writes it (an extension filter holding an ExpressionFilter).
func fileAccessLog(a *AccessLog) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: a.File}
	switch {
	case len(a.Labels) > 0:
		m := make(map[string]any, len(a.Labels))
		for k, v := range a.Labels {
			m[k] = v
		}
		s, _ := structpb.NewStruct(m)
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s},
		}}
	case a.Encoding == "JSON":
		var s *structpb.Struct
		if a.Format != "" {
			s, _ = jsonFormat(a.Format) // checked by Validate
		}
		if s == nil {
			m := make(map[string]any, len(IstioJSONFormat))
			for k, v := range IstioJSONFormat {
				m[k] = v
			}
			s, _ = structpb.NewStruct(m)
		}
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s},
		}}
	case a.Format != "":
		f := a.Format
		if !strings.HasSuffix(f, "\n") {
			f += "\n"
		}
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: f},
			}},
		}}
	}
	out := &accesslogv3.AccessLog{
		Name:       FileAccessLog,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: toAny(fl)},
	}
	if a.Filter != "" {
		out.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name:       CELAccessLogFilter,
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: toAny(&celv3.ExpressionFilter{Expression: a.Filter})},
			},
		}}
	}
	return out
}

// SetAccessLogging replaces the Telemetry access logging of the next
// translations (nil: meshConfig's access log).
func (tr *Translator) SetAccessLogging(a *AccessLogging) { tr.t.opts.AccessLogging = a }
