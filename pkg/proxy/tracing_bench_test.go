package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/portico-gateway/portico/pkg/translate"
)

// BenchmarkTracingCost is the proxy's CPU per request over real sockets
// with tracing off, on but not sampled (0%), and on and sampled (100%,
// exported to an OTLP/gRPC collector): the difference between rows is
// what tracing costs.
func BenchmarkTracingCost(b *testing.B) {
	for _, c := range []struct {
		name     string
		sampling float64
		on       bool
	}{{"off", 0, false}, {"unsampled", 0, true}, {"sampled", 100, true}} {
		b.Run(c.name, func(b *testing.B) {
			var tr *translate.Tracing
			if c.on {
				col := startOTLP(b)
				tr = &translate.Tracing{SamplingPercent: c.sampling,
					Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "127.0.0.1", Port: col.port}}
			}
			e := startTraced(b, tr)
			e.b.keep = false
			const conns = 8
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
			defer client.CloseIdleConnections()
			url := "http://" + e.p.Addr(80) + "/bench"
			one := func() error {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "app.example.com"
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			for i := 0; i < 200; i++ {
				if err := one(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			var wg sync.WaitGroup
			var failed sync.Once
			var ferr error
			per := b.N/conns + 1
			for w := 0; w < conns; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if err := one(); err != nil {
							failed.Do(func() { ferr = err })
							return
						}
					}
				}()
			}
			wg.Wait()
			cpu := cpuTime() - cpu0
			b.StopTimer()
			if ferr != nil {
				b.Fatal(ferr)
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(per*conns), "cpu-µs/req")
		})
	}
}
