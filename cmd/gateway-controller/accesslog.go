package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/translate"
)

// loadAccessLog reads meshConfig's accessLogFile, accessLogEncoding and
// accessLogFormat. It returns nil (Portico's default: the stdout logger in
// Envoy's format) when there is no mesh config or it does not mention
// accessLogFile; once it does, Istio's semantics hold (empty: off). The
// format is compiled here with the proxy's compiler so a mistake stops the
// controller with the field named, rather than every proxy NACKing.
func loadAccessLog(meshPath string) (*translate.AccessLog, error) {
	if meshPath == "" {
		return nil, nil
	}
	b, err := os.ReadFile(meshPath)
	if err != nil {
		return nil, fmt.Errorf("--mesh-config: %w", err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	var mc struct {
		AccessLogFile     *string `json:"accessLogFile"`
		AccessLogEncoding string  `json:"accessLogEncoding"`
		AccessLogFormat   string  `json:"accessLogFormat"`
	}
	if err := json.Unmarshal(j, &mc); err != nil {
		return nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	if mc.AccessLogFile == nil {
		if mc.AccessLogEncoding != "" || mc.AccessLogFormat != "" {
			return nil, fmt.Errorf("--mesh-config %s: accessLogEncoding/accessLogFormat need accessLogFile (e.g. /dev/stdout)", meshPath)
		}
		return nil, nil
	}
	a := &translate.AccessLog{File: *mc.AccessLogFile, Encoding: mc.AccessLogEncoding, Format: mc.AccessLogFormat}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	if a.Format != "" {
		if a.Encoding == "JSON" {
			_, err = accesslog.CompileJSONObject(a.Format)
		} else {
			_, err = accesslog.CompileText(a.Format)
		}
		if err != nil {
			return nil, fmt.Errorf("--mesh-config %s: accessLogFormat: %w", meshPath, err)
		}
	}
	return a, nil
}
