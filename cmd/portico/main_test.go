package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/internal/testenv"
)

// cli runs the command in-process as main would.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// expanded writes a testdata input with its ${PEM:…} placeholders filled.
func expanded(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, golden.ExpandPEM(b), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTranslateThenProxyConfig: the offline translation of seed-shaped
// YAML, read back by proxy-config as istioctl would print it. The VIRTUAL
// SERVICE and DESTINATION RULE columns come from the resources' metadata,
// the secrets' columns from the certificate.
func TestTranslateThenProxyConfig(t *testing.T) {
	in := expanded(t, "gateway.in.yaml")
	out, errOut, code := cli(t, "translate", "-f", in, "--to", "xds")
	if code != 0 {
		t.Fatalf("translate: exit %d: %s", code, errOut)
	}
	dumpFile := filepath.Join(t.TempDir(), "dump.json")
	if err := os.WriteFile(dumpFile, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Error("the translated dump carries a private key")
	}
	for _, kind := range []string{"listeners", "routes", "clusters", "endpoints"} {
		t.Run(kind, func(t *testing.T) {
			got, errOut, code := cli(t, "proxy-config", kind, "-f", dumpFile)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			golden.Check(t, filepath.Join("testdata", "pc-"+kind+".golden"), []byte(got))
		})
	}
	// Filters, as istioctl's.
	got, _, _ := cli(t, "pc", "clusters", "-f", dumpFile, "--port", "3306")
	if strings.Count(got, "\n") != 2 || !strings.Contains(got, "mysql.default.svc.cluster.local") {
		t.Errorf("--port 3306 should keep the mysql cluster only:\n%s", got)
	}
	got, _, _ = cli(t, "pc", "routes", "-f", dumpFile, "--name", "http.80", "-o", "json")
	if !strings.HasPrefix(got, "[") || !strings.Contains(got, `"name": "http.80"`) || strings.Contains(got, "https.443") {
		t.Errorf("-o json --name http.80:\n%.400s", got)
	}
	if _, errOut, code := cli(t, "pc", "routes"); code != 1 || !strings.Contains(errOut, "no source") {
		t.Errorf("no source: exit %d, %q", code, errOut)
	}
	if _, errOut, code := cli(t, "pc", "nonsense", "-f", dumpFile); code != 1 || !strings.Contains(errOut, "unknown") {
		t.Errorf("unknown kind: exit %d, %q", code, errOut)
	}
}

func TestTranslateIRAndStatus(t *testing.T) {
	in := expanded(t, "gateway.in.yaml")
	out, _, code := cli(t, "translate", "-f", in, "--to", "ir")
	redacted := "privateKey: " + base64.StdEncoding.EncodeToString([]byte("[redacted]"))
	if code != 0 || !strings.Contains(out, "proxies:") || strings.Count(out, "privateKey:") != strings.Count(out, redacted) || !strings.Contains(out, redacted) {
		t.Errorf("--to ir: exit %d, keys must be redacted:\n%.300s", code, out)
	}
	out, _, code = cli(t, "translate", "-f", in, "--to", "status")
	if code != 0 || !strings.Contains(out, "kind: VirtualService") || !strings.Contains(out, "type: Accepted") {
		t.Errorf("--to status: exit %d:\n%.300s", code, out)
	}
	if _, errOut, code := cli(t, "translate", "--to", "xds"); code != 1 || !strings.Contains(errOut, "no input") {
		t.Errorf("no input: exit %d %q", code, errOut)
	}
}

// TestAnalyze: istioctl analyze's output lines, levels and exit codes.
func TestAnalyze(t *testing.T) {
	out, _, code := cli(t, "analyze", filepath.Join("testdata", "broken.in.yaml"))
	if code != exitIssues {
		t.Errorf("errors found: exit %d, want %d", code, exitIssues)
	}
	golden.Check(t, filepath.Join("testdata", "analyze-broken.golden"), []byte(out))
	if !strings.Contains(out, "Error [IST0101] (VirtualService default/typo)") {
		t.Errorf("want istioctl's line shape for the missing gateway:\n%s", out)
	}
	// Only warnings: exit 0 unless the threshold says warnings count.
	warnOnly := expanded(t, "gateway.in.yaml")
	if _, _, code := cli(t, "analyze", warnOnly); code != 0 {
		t.Errorf("clean input: exit %d", code)
	}
	out, _, code = cli(t, "analyze", "-o", "yaml", filepath.Join("testdata", "broken.in.yaml"))
	if code != exitIssues || !strings.Contains(out, "code: IST0101") || !strings.Contains(out, "level: Error") {
		t.Errorf("-o yaml: exit %d:\n%s", code, out)
	}
	if _, _, code := cli(t, "analyze", "--failure-threshold", "Info", filepath.Join("testdata", "broken.in.yaml")); code != exitIssues {
		t.Errorf("threshold Info: exit %d", code)
	}
}

// TestAnalyzeParity: one finding per analyzer Portico shares with istioctl
// analyze, each with istioctl's code and level, errors first; exit 79.
func TestAnalyzeParity(t *testing.T) {
	in := filepath.Join("testdata", "analyze-parity.in.yaml")
	out, _, code := cli(t, "analyze", "--proxy", "istio=ingressgateway", in)
	if code != exitIssues {
		t.Errorf("errors found: exit %d, want %d", code, exitIssues)
	}
	golden.Check(t, filepath.Join("testdata", "analyze-parity.golden"), []byte(out))
	for _, want := range []string{
		"Error [IST0145] (Gateway default/gw) spec.servers[0].hosts: Conflict with gateways default/other (workload selector istio=ingressgateway, port 80,",
		"Error [IST0145] (Gateway default/other)",
		`Error [IST0101] (Gateway default/orphan) spec.selector: Referenced selector not found: "istio=egressgateway"`,
		"Error [IST0106] (VirtualService default/zero-timeout) spec.http[0].timeout: timeout 0s: duration must be greater than 1ms",
		"Warning [IST0138] (Gateway default/gw) spec.servers: Duplicate certificate in multiple gateways [default/gw default/other]",
		`Warning [IST0133] (VirtualService default/shadowed) spec.gateways[0]: using legacy gatewayName format "gw.default.svc.cluster.local"; prefer the <namespace>/<name> format: "default/gw"`,
		"Warning [IST0130] (VirtualService default/shadowed) spec.http: VirtualService rule #1 not used (all matches used by prior rules).",
		"Warning [IST0132] (VirtualService default/unserved)",
		"Info [IST0131] (VirtualService default/shadowed) spec.http: VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0).",
		"Info [IST0131] (VirtualService default/shadowed) spec.http: VirtualService rule #2 match #0 of prefix /api/v2 is not used",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	rank := map[string]int{"Error": 3, "Warning": 2, "Info": 1}
	for i := 1; i < len(lines); i++ {
		a, _, _ := strings.Cut(lines[i-1], " ")
		b, _, _ := strings.Cut(lines[i], " ")
		if rank[a] < rank[b] {
			t.Errorf("line %d (%s) after a lower level (%s): errors, then warnings, then infos", i, b, a)
		}
	}
	// Without --proxy the proxies are unknown: no selector finding.
	out, _, _ = cli(t, "analyze", in)
	if strings.Contains(out, "IST0101") {
		t.Errorf("selector reported without knowing the proxies:\n%s", out)
	}
	if _, _, code := cli(t, "analyze", "--proxy", "no-equals-sign", in); code == 0 || code == exitIssues {
		t.Errorf("malformed --proxy: exit %d, want a usage error", code)
	}
}

// TestProxyConfigLive reads a running proxy's admin port: the dump of a
// proxy fed over xDS by a real control plane, with the certificate
// inlined by the proxy as Envoy does (so the secrets table is filled).
func TestProxyConfigLive(t *testing.T) {
	cp := testenv.StartControlPlane(t, "127.0.0.1:0")
	yaml, err := os.ReadFile(filepath.Join("testdata", "gateway.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cp.Publish(t, string(yaml))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443, 3306}})
	p.WaitReady(t)
	admin := strings.TrimPrefix(p.Admin.URL, "http://")
	var out string
	testenv.WaitFor(t, "the secret in the dump", func() bool {
		var code int
		out, _, code = cli(t, "pc", "secrets", "--admin", admin)
		return code == 0 && strings.Contains(out, "kubernetes://counter-cert")
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "Cert Chain ACTIVE true") {
		t.Errorf("secrets table should show a valid certificate chain:\n%s", out)
	}
	fields := strings.Fields(lines[1])
	if notAfter, err := time.Parse(time.RFC3339, fields[len(fields)-2]); err != nil || notAfter.Before(time.Now()) {
		t.Errorf("NOT AFTER column %q: %v", fields[len(fields)-2], err)
	}
	out, errOut, code := cli(t, "pc", "all", "--admin", admin)
	if code != 0 || !strings.Contains(out, "rating.default") || !strings.Contains(out, "Route: http.80") {
		t.Errorf("pc all: exit %d %s\n%s", code, errOut, out)
	}
	if _, errOut, code := cli(t, "pc", "all", "--admin", "127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "reaching") {
		t.Errorf("unreachable admin: exit %d %q", code, errOut)
	}
}
