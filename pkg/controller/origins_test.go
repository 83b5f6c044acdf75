package controller

import (
	"reflect"
	"testing"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/xds"
)

// TestSecretOrigins: where the xDS server believes a Secret comes from
// decides which proxies receive its private key. A Secret a Gateway API
// listener names in another namespace under a ReferenceGrant counts as the
// Gateway's namespace's; any other Secret counts as its own namespace's.
func TestSecretOrigins(t *testing.T) {
	secretRef := func(ns, name string) []ir.Ref {
		return []ir.Ref{{Kind: resource.KindSecret, Namespace: ns, Name: name}}
	}
	p := &ir.Proxy{Secrets: []*ir.Secret{
		{Name: "kubernetes://own", Sources: secretRef("istio-system", "own")},
		{Name: "kubernetes://certs/shared", Sources: secretRef("certs", "shared"), GrantedTo: "infra"},
		{Name: "kubernetes://certs/ungranted", Sources: secretRef("certs", "ungranted")},
		{Name: "file-cert:/a~/b"},
	}}
	want := xds.SecretOrigins{
		"kubernetes://own":             {"istio-system"},
		"kubernetes://certs/shared":    {"infra"},
		"kubernetes://certs/ungranted": {"certs"},
	}
	if got := secretOrigins(p); !reflect.DeepEqual(got, want) {
		t.Errorf("origins\n got %v\nwant %v", got, want)
	}
}
