package proxy

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// TestIncrementalRouteApplyEqualsFreshCompile: the proxy compiles route
// configurations virtual host by virtual host and reuses compiled virtual
// hosts by the hash of their bytes, across route configurations and
// updates. After every update of random sequences — route configurations
// as the controller publishes them for random configurations and edits
// (internal/randconfig), some also published under a second name so that
// identical virtual hosts are shared — the proxy's compiled tables equal a
// fresh compile of the same resources (router.Compile, compared
// structurally), its decoded messages equal a full decode, only the
// virtual hosts in use stay remembered, and an update the proxy rejects
// leaves the previous state in place.
//
// PORTICO_PROXY_DIFF_SEQUENCES sets the number of sequences (default 100
// of 20 updates; -short: 10).
func TestIncrementalRouteApplyEqualsFreshCompile(t *testing.T) {
	sequences, steps := 100, 20
	if v, err := strconv.Atoi(os.Getenv("PORTICO_PROXY_DIFF_SEQUENCES")); err == nil && v > 0 {
		sequences = v
	}
	if testing.Short() {
		sequences = 10
	}
	base := uint64(time.Now().UnixNano())
	t.Logf("%d sequences × %d updates, first seed %d", sequences, steps, base)
	applied, rejected := 0, 0
	for i := range sequences {
		a, r := routeSequence(t, base+uint64(i), steps)
		applied, rejected = applied+a, rejected+r
		if t.Failed() {
			return
		}
	}
	t.Logf("%d updates applied and checked, %d rejected and checked", applied, rejected)
	if rejected == 0 {
		t.Error("no update was rejected: the rejection path went untested")
	}
}

func routeSequence(t *testing.T, seed uint64, steps int) (applied, rejected int) {
	t.Helper()
	w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 1})
	p := New(Options{NodeID: "test", Labels: randconfig.Classes[0]}, logr.Discard())
	defer func() { p.cancel(); p.Listeners.Close(); p.Clusters.Close() }()
	opts := gateway.Options{Classes: randconfig.Classes, Now: func() time.Time { return randconfig.Now }}
	var history []string
	fail := func(step int, format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d, step %d, after %v: %s", seed, step, history, fmt.Sprintf(format, args...))
	}
	for step := 0; step <= steps; step++ {
		if step > 0 {
			history = append(history, w.Edit())
		}
		resources, raws := publishedRoutes(t, w, opts, seed, step)
		if resources == nil {
			continue
		}
		prevCfgs, prevVhosts := p.routeCfgs, p.vhosts
		err := p.Update(resourcev3.RouteType, resources, fmt.Sprint(step))
		fresh, freshErr := compileFresh(raws)
		if (err == nil) != (freshErr == nil) {
			fail(step, "incremental apply error %v, fresh compile error %v", err, freshErr)
			return
		}
		if err != nil {
			if !reflect.DeepEqual(p.routeCfgs, prevCfgs) || !reflect.DeepEqual(p.vhosts, prevVhosts) {
				fail(step, "a rejected update (%v) changed the compiled state", err)
				return
			}
			rejected++
			continue
		}
		applied++
		if len(p.routeCfgs) != len(fresh) {
			fail(step, "%d route tables, fresh compile has %d", len(p.routeCfgs), len(fresh))
			return
		}
		inUse := map[string]bool{}
		for name, f := range fresh {
			got, ok := p.routeCfgs[name]
			if !ok {
				fail(step, "route configuration %s missing", name)
				return
			}
			if !reflect.DeepEqual(got.value, f.table) {
				fail(step, "route configuration %s: compiled table differs from a fresh compile", name)
				return
			}
			if !proto.Equal(got.message(), f.msg) {
				fail(step, "route configuration %s: decoded message differs from a full decode", name)
				return
			}
			for _, vb := range f.vhostBytes {
				inUse[hashOf(vb)] = true
			}
		}
		if len(p.vhosts) != len(inUse) {
			fail(step, "%d virtual hosts remembered, %d in use", len(p.vhosts), len(inUse))
			return
		}
	}
	return applied, rejected
}

// publishedRoutes binds, translates and versions the world for the
// ingress class as the controller does, and returns its route
// configurations as the proxy receives them. Now and then one is also
// published under a second name (sharing every virtual host's bytes), or
// one gets a virtual host the proxy does not support (to be rejected).
func publishedRoutes(t *testing.T, w *randconfig.World, opts gateway.Options, seed uint64, step int) (map[string]xdsclient.Resource, map[string][]byte) {
	t.Helper()
	p := gateway.Build(w.Resources(), opts).Proxy(randconfig.Classes[0])
	if p == nil {
		return nil, nil
	}
	tr, err := translate.Translate(p, translate.Options{})
	if err != nil {
		return nil, nil
	}
	snap, _, err := xds.NewSnapshot(tr, nil)
	if err != nil {
		return nil, nil
	}
	raws := map[string][]byte{}
	for name, r := range snap.GetResources(resourcev3.RouteType) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		raws[name] = b
	}
	mix := seed + uint64(step)*7919
	for name, b := range raws {
		switch mix % 5 {
		case 0:
			raws[name+".copy"] = b
		case 1:
			if mix%3 == 0 {
				bad := &routev3.VirtualHost{Name: "unsupported", Domains: []string{"unsupported.example"}, IncludeAttemptCountInResponse: true}
				vb, _ := proto.Marshal(bad)
				raws[name] = protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), b...), virtualHostsField, protowire.BytesType), vb)
			}
		}
		break
	}
	out := map[string]xdsclient.Resource{}
	for name, b := range raws {
		out[name] = xdsclient.Resource{Name: name, Any: &anypb.Any{TypeUrl: resourcev3.RouteType, Value: b}}
	}
	return out, raws
}

type freshTable struct {
	table      *router.Table
	msg        *routev3.RouteConfiguration
	vhostBytes [][]byte
}

// compileFresh decodes and compiles every route configuration whole, with
// nothing remembered.
func compileFresh(raws map[string][]byte) (map[string]freshTable, error) {
	out := map[string]freshTable{}
	for name, b := range raws {
		rc := &routev3.RouteConfiguration{}
		if err := proto.Unmarshal(b, rc); err != nil {
			return nil, err
		}
		if err := supported.Check(rc); err != nil {
			return nil, err
		}
		table, err := router.Compile(rc)
		if err != nil {
			return nil, err
		}
		var vbs [][]byte
		for _, vh := range rc.VirtualHosts {
			vb, err := proto.MarshalOptions{Deterministic: true}.Marshal(vh)
			if err != nil {
				return nil, err
			}
			vbs = append(vbs, vb)
		}
		out[name] = freshTable{table: table, msg: rc, vhostBytes: vbs}
	}
	return out, nil
}
