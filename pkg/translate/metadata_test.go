package translate

import (
	"testing"

	"github.com/portico-gateway/portico/pkg/ir"
)

// TestClusterConfigOnlyFromDestinationRule: istio.config on a cluster is
// what istioctl shows as its DESTINATION RULE; Istio sets it only from a
// DestinationRule, so a cluster made from a ServiceEntry alone has none.
func TestClusterConfigOnlyFromDestinationRule(t *testing.T) {
	se := ir.Ref{Kind: "ServiceEntry", Namespace: "default", Name: "web"}
	dr := ir.Ref{Kind: "DestinationRule", Namespace: "default", Name: "web"}
	for _, tc := range []struct {
		name    string
		sources []ir.Ref
		want    string
	}{
		{"service entry only", []ir.Ref{se}, ""},
		{"service only", []ir.Ref{{Kind: "Service", Namespace: "default", Name: "web"}}, ""},
		{"with a destination rule", []ir.Ref{se, dr}, dr.ConfigPath()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := UnpackMetadata(clusterMetadata(&ir.Cluster{Name: "outbound|80||web.default.svc.cluster.local", Service: "web.default.svc.cluster.local", Sources: tc.sources}))
			istio := md.GetFilterMetadata()["istio"].GetFields()
			if got := istio["config"].GetStringValue(); got != tc.want {
				t.Errorf("istio.config = %q, want %q", got, tc.want)
			}
			if istio["services"] == nil {
				t.Errorf("istio.services missing: %v", istio)
			}
			if n := len(md.GetFilterMetadata()["portico"].GetFields()["sources"].GetListValue().GetValues()); n != len(tc.sources) {
				t.Errorf("portico.sources lists %d sources, want %d", n, len(tc.sources))
			}
		})
	}
}
