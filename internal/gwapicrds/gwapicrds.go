// Package gwapicrds copies the Kubernetes Gateway API CRD bundles
// (standard and experimental channels) from the sigs.k8s.io/gateway-api
// module Portico builds against into config/crd/gateway-api, byte for
// byte: the CRDs are the upstream project's, never hand-written, and the
// Go types Portico decodes into come from the same module version. Run
// `go test ./internal/gwapicrds -update` after changing the version in
// go.mod.
package gwapicrds

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Module is the Go module the bundles come from.
const Module = "sigs.k8s.io/gateway-api"

// Channels are the release channels shipped. Experimental is a superset
// of standard (more fields, more kinds).
var Channels = []string{"standard", "experimental"}

// Dir is where the bundles live, relative to the repository root.
var Dir = filepath.Join("config", "crd", "gateway-api")

// ModuleDir returns the directory of the module version go.mod names
// (in the module cache), asking the go command from within repoRoot.
func ModuleDir(repoRoot string) (dir, version string, err error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", Module)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("locating %s: %v: %s", Module, err, stderr.String())
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] == "" {
		// An empty Dir means the module is not downloaded yet.
		return "", "", fmt.Errorf("locating %s: go list said %q (run go mod download %s)", Module, out, Module)
	}
	return f[0], f[1], nil
}

// Bundle returns every file of a channel's bundle in the module (the
// CRDs, the ValidatingAdmissionPolicy guarding upgrades, and the
// kustomization listing them), by file name.
func Bundle(moduleDir, channel string) (map[string][]byte, error) {
	src := filepath.Join(moduleDir, "config", "crd", channel)
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("reading the %s channel bundle: %w", channel, err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = b
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the %s channel bundle in %s is empty", channel, src)
	}
	return out, nil
}

// Names returns a bundle's file names, sorted.
func Names(bundle map[string][]byte) []string {
	names := make([]string, 0, len(bundle))
	for n := range bundle {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
