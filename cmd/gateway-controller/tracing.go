package main

import (
	"encoding/json"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/telemetry"
	"github.com/portico-gateway/portico/pkg/translate"
)

// loadTracing reads meshConfig's extensionProviders (opentelemetry,
// zipkin), defaultProviders.tracing, enableTracing and
// defaultConfig.tracing.sampling into the gateways' tracing (nil: none),
// and the mesh part Telemetry resources build on.
func loadTracing(meshPath, rootNamespace string) (*telemetry.Mesh, *translate.Tracing, error) {
	if meshPath == "" {
		return &telemetry.Mesh{}, nil, nil
	}
	b, err := os.ReadFile(meshPath)
	if err != nil {
		return nil, nil, fmt.Errorf("--mesh-config: %w", err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(j, mc); err != nil {
		return nil, nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	m, err := telemetry.FromMeshConfig(mc)
	if err != nil {
		return nil, nil, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	var raw struct {
		EnableTracing *bool `json:"enableTracing"`
	}
	_ = json.Unmarshal(j, &raw) // the protojson pass checked the document
	m.Disabled = raw.EnableTracing != nil && !*raw.EnableTracing
	tr, problems := telemetry.Tracing(m, telemetry.Scope{RootNamespace: rootNamespace}, nil)
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("--mesh-config %s: defaultProviders.tracing: %s", meshPath, problems[0].Message)
	}
	return m, tr, nil
}
