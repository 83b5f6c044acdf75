package main

import (
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// rootNamespace is Istio's root namespace for policies: --root-namespace,
// else the MeshConfig's rootNamespace, else "" (istio-system).
func rootNamespace(flagValue, meshPath string) (string, error) {
	if flagValue != "" || meshPath == "" {
		return flagValue, nil
	}
	b, err := os.ReadFile(meshPath)
	if err != nil {
		return "", fmt.Errorf("--mesh-config: %w", err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return "", fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(j, mc); err != nil {
		return "", fmt.Errorf("--mesh-config %s: %w", meshPath, err)
	}
	return mc.GetRootNamespace(), nil
}
