package proxy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// randconfigOptions binds a random world for its classes.
var randconfigOptions = gateway.Options{Classes: randconfig.Classes, Now: func() time.Time { return randconfig.Now }}

// published binds, translates and snapshots a random world for its first
// class as the controller does; nil when the class has nothing or the
// world does not translate.
func published(w *randconfig.World) *xds.Snapshot {
	px := gateway.Build(w.Resources(), randconfigOptions).Proxy(randconfig.Classes[0])
	if px == nil {
		return nil
	}
	tr, err := translate.Translate(px, translate.Options{})
	if err != nil {
		return nil
	}
	snap, _, err := xds.NewSnapshot(tr, nil)
	if err != nil {
		return nil
	}
	return snap
}

// received is a snapshot's resources of a type as the proxy receives
// them.
func received(t *testing.T, snap *xds.Snapshot, typ string) map[string]xdsclient.Resource {
	t.Helper()
	in := map[string]xdsclient.Resource{}
	for name, r := range snap.GetResources(typ) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		in[name] = xdsclient.Resource{Name: name, Any: &anypb.Any{TypeUrl: typ, Value: b}}
	}
	return in
}
