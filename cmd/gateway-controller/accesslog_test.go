package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/pkg/translate"
)

func TestLoadAccessLog(t *testing.T) {
	cases := []struct {
		name, mesh string
		want       *translate.AccessLog
		wantErr    string
	}{
		{"not mentioned keeps Portico's default", "pathNormalization:\n  normalization: BASE\n", nil, ""},
		{"empty file is off", "accessLogFile: \"\"\n", &translate.AccessLog{}, ""},
		{"file and json", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n",
			&translate.AccessLog{File: "/dev/stdout", Encoding: "JSON"}, ""},
		{"text format", "accessLogFile: /tmp/a.log\naccessLogFormat: \"%RESPONSE_CODE% %REQ(:PATH):10%\"\n",
			&translate.AccessLog{File: "/tmp/a.log", Format: "%RESPONSE_CODE% %REQ(:PATH):10%"}, ""},
		{"json object format", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{\"code\":\"%RESPONSE_CODE%\"}'\n",
			&translate.AccessLog{File: "/dev/stdout", Encoding: "JSON", Format: `{"code":"%RESPONSE_CODE%"}`}, ""},
		{"unknown operator", "accessLogFile: /dev/stdout\naccessLogFormat: \"%DYNAMIC_METADATA(x)%\"\n", nil,
			"accessLogFormat: access log format: unsupported command operator %DYNAMIC_METADATA%"},
		{"bad encoding", "accessLogFile: /dev/stdout\naccessLogEncoding: YAML\n", nil, "accessLogEncoding"},
		{"json format not an object", "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: \"%START_TIME%\"\n", nil, "JSON object"},
		{"format without file", "accessLogFormat: \"%START_TIME%\"\n", nil, "need accessLogFile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "mesh.yaml")
			if err := os.WriteFile(p, []byte(c.mesh), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := loadAccessLog(p)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
