package router

import (
	"fmt"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// The retry decision for every kind of outcome under each retry_on
// condition Istio's VirtualService retries.retryOn can produce.
func TestRetryPolicyOutcomeTable(t *testing.T) {
	type outcome struct {
		o            Outcome
		status, grpc int
	}
	var (
		connect  = outcome{OutcomeConnectFailure, 0, -1}
		timeout  = outcome{OutcomeTimeout, 0, -1}
		reset    = outcome{OutcomeReset, 0, -1}
		ok200    = outcome{OutcomeResponse, 200, -1}
		s404     = outcome{OutcomeResponse, 404, -1}
		s409     = outcome{OutcomeResponse, 409, -1}
		s500     = outcome{OutcomeResponse, 500, -1}
		s502     = outcome{OutcomeResponse, 502, -1}
		s503     = outcome{OutcomeResponse, 503, -1}
		s504     = outcome{OutcomeResponse, 504, -1}
		grpc14   = outcome{OutcomeResponse, 200, 14} // UNAVAILABLE in trailers
		grpc4    = outcome{OutcomeResponse, 200, 4}  // DEADLINE_EXCEEDED
		grpc1    = outcome{OutcomeResponse, 200, 1}  // CANCELLED
		grpc13   = outcome{OutcomeResponse, 200, 13} // INTERNAL
		grpc8    = outcome{OutcomeResponse, 200, 8}  // RESOURCE_EXHAUSTED
		grpcOK   = outcome{OutcomeResponse, 200, 0}
		all      = []outcome{connect, timeout, reset, ok200, s404, s409, s500, s502, s503, s504, grpc14, grpc4, grpc1, grpc13, grpc8, grpcOK}
		retrying = func(os ...outcome) map[outcome]bool {
			m := map[outcome]bool{}
			for _, o := range os {
				m[o] = true
			}
			return m
		}
	)
	cases := []struct {
		retryOn string
		codes   []uint32
		want    map[outcome]bool // outcomes retried; every other one is not
	}{
		{"5xx", nil, retrying(connect, timeout, reset, s500, s502, s503, s504)},
		{"gateway-error", nil, retrying(connect, timeout, reset, s502, s503, s504)},
		{"reset", nil, retrying(connect, reset)},
		{"connect-failure", nil, retrying(connect)},
		{"reset-before-request", nil, retrying(connect)},
		{"retriable-4xx", nil, retrying(s409)},
		{"retriable-status-codes", []uint32{404, 503}, retrying(s404, s503)},
		{"retriable-status-codes", nil, retrying()},
		{"unavailable,deadline-exceeded", nil, retrying(grpc14, grpc4)},
		{"cancelled,internal,resource-exhausted", nil, retrying(grpc1, grpc13, grpc8)},
		{"refused-stream", nil, retrying()}, // refused streams are retried by the HTTP/2 client itself
		{"envoy-ratelimited", nil, retrying()},
		{"connect-failure,retriable-status-codes", []uint32{409}, retrying(connect, s409)},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s%v", tc.retryOn, tc.codes), func(t *testing.T) {
			p, err := compileRetry(&routev3.RetryPolicy{RetryOn: tc.retryOn, RetriableStatusCodes: tc.codes})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range all {
				if got := p.Retriable(o.o, o.status, o.grpc); got != tc.want[o] {
					t.Errorf("outcome %+v: retried %v, want %v", o, got, tc.want[o])
				}
			}
		})
	}
	var none *RetryPolicy
	for _, o := range all {
		if none.Retriable(o.o, o.status, o.grpc) {
			t.Errorf("no policy retried %+v", o)
		}
	}
}
