package accesslog

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func logger(t *testing.T, name string, m proto.Message) *accesslogv3.AccessLog {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &accesslogv3.AccessLog{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}
}

func textSource(ds *corev3.DataSource) *filev3.FileAccessLog_LogFormat {
	return &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: ds}}}
}

func TestFromEnvoy(t *testing.T) {
	inline := func(s string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
	}
	jsonStruct, _ := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "n": 1.0})
	okStruct, _ := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "srv": "%RESP(SERVER)%"})
	cases := []struct {
		name    string
		log     *accesslogv3.AccessLog
		wantErr string
		check   func(t *testing.T, tg Target)
	}{
		{"stdout", logger(t, StdoutLogger, &streamv3.StdoutAccessLog{}), "", func(t *testing.T, tg Target) {
			if tg.Path != "" || tg.Format != nil {
				t.Errorf("%+v", tg)
			}
		}},
		{"file text", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/tmp/x", AccessLogFormat: textSource(inline("%RESP(X-A?X-B)%\n"))}), "",
			func(t *testing.T, tg Target) {
				if tg.Path != "/tmp/x" || tg.Format == nil || strings.Join(tg.RespHeaders, ",") != "x-a,x-b" {
					t.Errorf("%+v", tg)
				}
			}},
		{"file json", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
			LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: okStruct}}}}), "",
			func(t *testing.T, tg Target) {
				if tg.Format == nil || !tg.Format.json || strings.Join(tg.RespHeaders, ",") != "server" {
					t.Errorf("%+v", tg)
				}
			}},
		{"unknown logger", logger(t, "envoy.access_loggers.http_grpc", &corev3.DataSource{}), "unsupported access logger", nil},
		{"file without path", logger(t, FileLogger, &filev3.FileAccessLog{}), "path is required", nil},
		//lint:ignore SA1019 the deprecated format is the case under test
		{"deprecated format", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/x", AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%START_TIME%"}}),
			"only log_format", nil},
		{"format from a file", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/x",
			AccessLogFormat: textSource(&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/fmt"}})}), "only inline_string", nil},
		{"unknown operator", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/x", AccessLogFormat: textSource(inline("%FILTER_STATE(a)%"))}),
			"unsupported command operator %FILTER_STATE%", nil},
		{"json number value", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/x", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
			LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: jsonStruct}}}}), `key "n"`, nil},
		{"omit_empty_values", logger(t, FileLogger, &filev3.FileAccessLog{Path: "/x", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
			LogFormat: &corev3.SubstitutionFormatString{OmitEmptyValues: true, Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: inline("x")}}}}),
			"only text_format_source", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := FromEnvoy([]*accesslogv3.AccessLog{c.log})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, got[0])
		})
	}
}
