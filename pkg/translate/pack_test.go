package translate

import (
	"bytes"
	"fmt"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
)

// Filter configs hold maps (RBAC policies, jwt_authn providers); packed
// with Go's map order, the same configuration had different bytes on
// every build, so listeners never compared equal and a stock Envoy saw a
// changed listener (and drained) at each push.
func TestToAnyIsDeterministic(t *testing.T) {
	policies := map[string]*rbacconfigv3.Policy{}
	for i := range 16 {
		policies[fmt.Sprintf("ns[default]-policy[p%d]-rule[0]", i)] = &rbacconfigv3.Policy{
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals:  []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
		}
	}
	cfg := &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW, Policies: policies}}
	first := toAny(cfg).Value
	for i := range 50 {
		if got := toAny(cfg).Value; !bytes.Equal(got, first) {
			t.Fatalf("packing %d gave different bytes for the same configuration", i+1)
		}
	}
}
