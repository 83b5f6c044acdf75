package translate_test

import (
	"fmt"
	"testing"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/translate"
)

// BenchmarkTranslate turns the IR of N VirtualServices into Envoy
// resources (the second stage of a rebuild).
func BenchmarkTranslate(b *testing.B) {
	ingress := map[string]string{"istio": "ingressgateway"}
	for _, n := range []int{100, 1000, 5000, 10000} {
		b.Run(fmt.Sprintf("vs=%d", n), func(b *testing.B) {
			o := scale.Options{VirtualServices: n}
			res, err := o.Resources()
			if err != nil {
				b.Fatal(err)
			}
			p := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := translate.Translate(p, translate.Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(o.Routes()), "routes")
		})
	}
}
