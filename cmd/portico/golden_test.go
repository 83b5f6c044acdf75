package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/internal/golden"
)

// TestProxyStatusDiffGolden: istioctl's layout for `proxy-status POD` on
// recorded dumps — the controller's view and a proxy that misses a
// listener (its port was taken), still has the previous route table, and
// reports endpoint health and weights (live state, not a difference).
func TestProxyStatusDiffGolden(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "ps-controller.in.json"))
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join("testdata", "ps-proxy.in.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeConfigDiff(&out, want, have); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "ps-diff.golden"), out.Bytes())
	for _, line := range []string{"Clusters Match\n", "Listeners Don't Match\n", "Routes Don't Match (RDS last loaded at Sat, 28 Nov 2026 10:01:00 UTC)\n", "Endpoints Match\n", "Secrets Match\n",
		"\n-                            \"timeout\": \"15s\"\n+                            \"timeout\": \"0s\"\n", "\n-        \"name\": \"0.0.0.0_3306\",\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("missing %q", line)
		}
	}
	// The same dump on both sides: everything matches.
	out.Reset()
	if err := writeConfigDiff(&out, want, want); err != nil || strings.Count(out.String(), " Match") != 5 || strings.Contains(out.String(), "Don't") {
		t.Errorf("identical dumps: %v\n%s", err, out.String())
	}
}

// TestProxyStatusDiffHostile: dumps that are not dumps are errors naming
// the side, never a panic or a false "Match".
func TestProxyStatusDiffHostile(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "ps-controller.in.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"not JSON":     "<html>502 Bad Gateway</html>",
		"unknown type": `{"configs":[{"@type":"type.googleapis.com/no.Such"}]}`,
		"wrong shape":  `{"configs":{"a":1}}`,
		"truncated":    string(good[:len(good)/2]),
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeConfigDiff(&out, []byte(bad), good); err == nil || !strings.Contains(err.Error(), "the controller's view") {
				t.Errorf("bad controller side: %v", err)
			}
			if err := writeConfigDiff(&out, good, []byte(bad)); err == nil || !strings.Contains(err.Error(), "the proxy's dump") {
				t.Errorf("bad proxy side: %v", err)
			}
			if out.Len() != 0 {
				t.Errorf("printed before failing: %q", out.String())
			}
		})
	}
}

// TestBootstrapGolden: `proxy-config bootstrap` and `all` on a recorded
// proxy dump, in istioctl's shapes.
func TestBootstrapGolden(t *testing.T) {
	dump := filepath.Join("testdata", "ps-proxy.in.json")
	for _, tc := range []struct{ golden, output string }{
		{"pc-bootstrap.golden", "table"}, {"pc-bootstrap-short.golden", "short"}, {"pc-bootstrap-yaml.golden", "yaml"},
	} {
		out, errOut, code := cli(t, "pc", "bootstrap", "-f", dump, "-o", tc.output)
		if code != 0 {
			t.Fatalf("-o %s: exit %d %s", tc.output, code, errOut)
		}
		golden.Check(t, filepath.Join("testdata", tc.golden), []byte(out))
	}
	out, _, code := cli(t, "pc", "all", "-f", dump)
	if code != 0 {
		t.Fatalf("pc all: exit %d", code)
	}
	golden.Check(t, filepath.Join("testdata", "pc-all.golden"), []byte(out))
	// A translated dump has no bootstrap: said, not an empty table.
	in := expanded(t, "gateway.in.yaml")
	xds, _, _ := cli(t, "translate", "-f", in, "--to", "xds")
	f := filepath.Join(t.TempDir(), "dump.json")
	os.WriteFile(f, []byte(xds), 0o600)
	if _, errOut, code := cli(t, "pc", "bootstrap", "-f", f); code != 1 || !strings.Contains(errOut, "no bootstrap") {
		t.Errorf("translated dump: exit %d %q", code, errOut)
	}
	if _, errOut, code := cli(t, "pc", "bootstrap", "-f", dump, "-o", "xml"); code != 1 || !strings.Contains(errOut, "want table, short, json or yaml") {
		t.Errorf("-o xml: exit %d %q", code, errOut)
	}
}

// TestPodRef: istioctl's POD[.NAMESPACE] argument.
func TestPodRef(t *testing.T) {
	c := &cluster{namespace: "ctx-ns", flags: &kubeFlags{}}
	for _, tc := range []struct{ arg, ns, name, err string }{
		{"gw-1", "ctx-ns", "gw-1", ""},
		{"gw-1.istio-system", "istio-system", "gw-1", ""},
		{"a.b.c", "c", "a.b", ""},
		{"", "", "", "want NAME"},
		{".ns", "", "", "want NAME"},
		{"gw.", "", "", "want NAME"},
	} {
		ns, name, err := c.podRef(tc.arg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.arg, err, tc.err)
			}
			continue
		}
		if err != nil || ns != tc.ns || name != tc.name {
			t.Errorf("%q = %s/%s %v, want %s/%s", tc.arg, ns, name, err, tc.ns, tc.name)
		}
	}
}
