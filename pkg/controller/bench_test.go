package controller

import (
	"context"
	"fmt"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/xds"
)

var ingress = map[string]string{"istio": "ingressgateway"}

// changedCopy returns res with VirtualService i at revision rev, as a
// provider would hand it over after one edit.
func changedCopy(b *testing.B, res *resource.Resources, o scale.Options, i, rev int) *resource.Resources {
	b.Helper()
	docs, err := scale.Decode(o.Service(i, rev)[:1])
	if err != nil {
		b.Fatal(err)
	}
	next := *res
	next.VirtualServices = append(res.VirtualServices[:0:0], res.VirtualServices...)
	for j, vs := range next.VirtualServices {
		if vs.Name == docs.VirtualServices[0].Name && vs.Namespace == docs.VirtualServices[0].Namespace {
			next.VirtualServices[j] = docs.VirtualServices[0]
		}
	}
	return &next
}

// BenchmarkRebuildAfterOneChange is the control plane's share of
// propagation: one VirtualService changed, then bind, translate, validate
// and publish for the ingress class, with the first build already done.
// The one-port cases put every host on one Gateway port, so one route
// configuration holds them all (Istio's http.80 shape).
func BenchmarkRebuildAfterOneChange(b *testing.B) {
	for _, o := range []scale.Options{{VirtualServices: 40}, {VirtualServices: 1200}, {VirtualServices: 5000},
		{VirtualServices: 1000, Gateways: 1}, {VirtualServices: 10000, Gateways: 1}} {
		name := fmt.Sprintf("vs=%d", o.VirtualServices)
		if o.Gateways == 1 {
			name = "one-port/" + name
		}
		b.Run(name, func(b *testing.B) {
			res, err := o.Resources()
			if err != nil {
				b.Fatal(err)
			}
			srv := xds.NewServer(logr.Discard(), gateway.ClassName)
			c := New(logr.Discard(), srv, nil, Options{StaticClasses: []map[string]string{ingress}})
			c.build(context.Background(), res)
			if !c.State().Published {
				b.Fatal(c.State().Errors)
			}
			variants := make([]*resource.Resources, 8)
			for i := range variants {
				variants[i] = changedCopy(b, res, o, 0, i+1)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.build(context.Background(), variants[i%len(variants)])
			}
			b.StopTimer()
			if !c.State().Published {
				b.Fatal(c.State().Errors)
			}
			b.ReportMetric(float64(o.Routes()), "routes")
		})
	}
}

// BenchmarkFullRebuild is a cold start: bind, translate, validate and
// publish everything for the ingress class with no earlier build to reuse.
func BenchmarkFullRebuild(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("vs=%d", n), func(b *testing.B) {
			o := scale.Options{VirtualServices: n}
			res, err := o.Resources()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				srv := xds.NewServer(logr.Discard(), gateway.ClassName)
				c := New(logr.Discard(), srv, nil, Options{StaticClasses: []map[string]string{ingress}})
				c.build(context.Background(), res)
				if !c.State().Published {
					b.Fatal(c.State().Errors)
				}
			}
			b.ReportMetric(float64(o.Routes()), "routes")
		})
	}
}
