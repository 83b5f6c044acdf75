package main

import (
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/translate"
)

// loadEdge builds the HTTP listeners' edge options: Envoy's edge defaults,
// then what Istio's mesh config says in Istio's spelling
// (pathNormalization, defaultConfig.gatewayTopology.numTrustedProxies),
// then Portico's edge options file, which names Envoy's fields. Unknown
// fields are errors that name them.
func loadEdge(meshPath, edgePath string) (translate.Edge, error) {
	e := translate.DefaultEdge()
	if meshPath != "" {
		b, err := os.ReadFile(meshPath)
		if err != nil {
			return e, fmt.Errorf("--mesh-config: %w", err)
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return e, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
		}
		mc := &meshv1alpha1.MeshConfig{}
		if err := protojson.Unmarshal(j, mc); err != nil {
			return e, fmt.Errorf("--mesh-config %s: %w", meshPath, err)
		}
		if pn := mc.GetPathNormalization(); pn != nil {
			e.PathNormalization = pn.GetNormalization().String()
			if e.PathNormalization == "DEFAULT" {
				e.PathNormalization = "BASE" // Istio's DEFAULT is BASE
			}
		}
		if gt := mc.GetDefaultConfig().GetGatewayTopology(); gt != nil {
			e.XffNumTrustedHops = gt.GetNumTrustedProxies()
		}
	}
	if edgePath != "" {
		b, err := os.ReadFile(edgePath)
		if err != nil {
			return e, fmt.Errorf("--edge-config: %w", err)
		}
		if err := yaml.UnmarshalStrict(b, &e); err != nil {
			return e, fmt.Errorf("--edge-config %s: %w", edgePath, err)
		}
	}
	if err := e.Validate(); err != nil {
		return e, fmt.Errorf("edge options: %w", err)
	}
	return e, nil
}
