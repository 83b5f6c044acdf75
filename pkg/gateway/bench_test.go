package gateway_test

import (
	"fmt"
	"testing"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
)

var benchSizes = []int{100, 1000, 5000, 10000}

// BenchmarkBuild binds a whole configuration of N VirtualServices (each
// with a DestinationRule, a Service, an EndpointSlice and two Pods) for
// the ingress gateway: the full rebuild a change triggers.
func BenchmarkBuild(b *testing.B) {
	ingress := map[string]string{"istio": "ingressgateway"}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("vs=%d", n), func(b *testing.B) {
			o := scale.Options{VirtualServices: n}
			res, err := o.Resources()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}})
				if r.Proxy(ingress) == nil {
					b.Fatal("nothing bound")
				}
			}
			b.ReportMetric(float64(o.Routes()), "routes")
		})
	}
}
