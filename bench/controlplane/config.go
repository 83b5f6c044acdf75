package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/portico-gateway/portico/internal/scale"
)

// probeDocs is what propagation is measured with: a VirtualService whose
// response header x-revision names its revision, routed to a real backend
// (the generated services' endpoints are not reachable), and a second
// host on the same backend for background load.
func probeDocs(rev int, backendPort int) []scale.Document {
	return []scale.Document{
		{Kind: "VirtualService", Namespace: "default", Name: "probe", YAML: fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: probe, namespace: default}
spec:
  hosts: [probe.gw-0.example.com]
  gateways: [istio-system/gw-0]
  http:
  - route: [{destination: {host: backend.bench.local}}]
    headers: {response: {set: {x-revision: "%d"}}}
`, rev)},
		{Kind: "VirtualService", Namespace: "default", Name: "load", YAML: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: load, namespace: default}
spec:
  hosts: [load.gw-0.example.com]
  gateways: [istio-system/gw-0]
  http: [{route: [{destination: {host: backend.bench.local}}]}]
`},
		{Kind: "ServiceEntry", Namespace: "default", Name: "backend", YAML: fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.bench.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: %d}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`, backendPort)},
	}
}

// writeConfig writes a configuration as a standalone user would keep it:
// the Gateways in one file, each service (VirtualService, DestinationRule,
// Service, EndpointSlice, Pods) in its own.
func writeConfig(dir string, o scale.Options, backendPort int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	shared := o.Shared()
	if backendPort > 0 {
		shared = append(shared, probeDocs(0, backendPort)[1:]...)
	}
	if err := os.WriteFile(filepath.Join(dir, "gateways.yaml"), []byte(scale.Join(shared)), 0o644); err != nil {
		return err
	}
	if backendPort > 0 {
		if err := writeProbe(dir, 0, backendPort); err != nil {
			return err
		}
	}
	for i := 0; i < o.VirtualServices; i++ {
		if err := os.WriteFile(serviceFile(dir, i), []byte(scale.Join(o.Service(i, 0))), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func serviceFile(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("svc-%05d.yaml", i))
}

// writeProbe replaces the probe's file atomically, as editors do: written
// beside the watched directory, then renamed into it.
func writeProbe(dir string, rev, backendPort int) error {
	tmp := filepath.Join(filepath.Dir(dir), "probe.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(probeDocs(rev, backendPort)[0].YAML), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "probe.yaml"))
}

// writeProbeInPlace replaces the probe's file atomically through a
// dot-prefixed temporary file in the watched directory itself.
func writeProbeInPlace(dir string, rev, backendPort int) error {
	tmp := filepath.Join(dir, ".probe.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(probeDocs(rev, backendPort)[0].YAML), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "probe.yaml"))
}
