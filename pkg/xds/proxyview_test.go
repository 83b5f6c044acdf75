package xds_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portico-gateway/portico/pkg/xds"
)

// TestProxyView: the per-proxy view (what /debug/config_dump?proxyID=
// serves, and proxy-status POD diffs) is what that proxy may receive — a
// service account that may not read Secrets sees CA certificates only,
// another class's secrets never — named as istioctl names proxies, and
// ambiguous names are refused rather than answered for one of them.
func TestProxyView(t *testing.T) {
	srv, addr, authority := secureServer(t)
	connect := func(token, id, ns string) {
		stream := openDelta(t, dial(t, addr, authority, token))
		n := nodeIn(id, ns, ingress)
		if id == "plain-1" {
			n.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
				Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 2, Patch: 3}}}
		}
		if err := stream.Send(deltaReq(n, resourcev3.ListenerType, "")); err != nil {
			t.Fatal(err)
		}
		recvDelta(t, stream)
	}
	connect("tok-ingress", "ingress-1", "istio-system")
	connect("tok-nosecrets", "plain-1", "istio-system")
	connect("tok-other-ns", "ingress-1", "other")
	waitFor(t, "three proxies", func() bool { return len(srv.Nodes()) == 3 })

	secrets := func(id string) []string {
		t.Helper()
		v, err := srv.ProxyView(id)
		if err != nil {
			t.Fatalf("ProxyView(%q): %v", id, err)
		}
		if len(v.Resources[resourcev3.ListenerType]) == 0 || v.Versions[resourcev3.ListenerType] == "" {
			t.Errorf("%s: no listeners or version in the view: %+v", id, v.Versions)
		}
		// Published virtual hosts, clusters and load assignments are
		// compact stand-ins; the view holds full messages.
		for typ, byName := range v.Resources {
			for name, m := range byName {
				if len(m.ProtoReflect().GetUnknown()) > 0 {
					t.Errorf("%s: %s %s is a compact stand-in, not the full message", id, typ, name)
				}
			}
		}
		var out []string
		for _, name := range slices.Sorted(maps.Keys(v.Resources[resourcev3.SecretType])) {
			if strings.HasPrefix(name, "kubernetes://") {
				out = append(out, name)
			}
		}
		return out
	}
	for _, tc := range []struct {
		id   string
		want []string
	}{
		{"ingress-1.istio-system", []string{"kubernetes://ingress-cert", "kubernetes://ingress-cert-cacert"}},
		{"plain-1", []string{"kubernetes://ingress-cert-cacert"}},
		{"plain-1.istio-system", []string{"kubernetes://ingress-cert-cacert"}},
		{"ingress-1.other", nil},
	} {
		if got := secrets(tc.id); !slices.Equal(got, tc.want) {
			t.Errorf("%s: secrets %v, want %v", tc.id, got, tc.want)
		}
	}
	if _, err := srv.ProxyView("ingress-1"); err == nil || !strings.Contains(err.Error(), "several proxies") {
		t.Errorf("an id two namespaces share: %v", err)
	}
	if _, err := srv.ProxyView("nobody"); !errors.Is(err, xds.ErrNoProxy) {
		t.Errorf("unknown proxy: %v", err)
	}
	// proxy-status carries the build version the proxy reports.
	for _, ps := range srv.ProxyStatus() {
		if want := map[bool]string{true: "1.2.3"}[ps.ID == "plain-1"]; ps.Version != want {
			t.Errorf("%s: version %q, want %q", ps.ID, ps.Version, want)
		}
	}
}
