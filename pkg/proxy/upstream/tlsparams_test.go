package upstream

import (
	"crypto/tls"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The translator asks for TLS 1.2–1.3 upstream, as Istio does; the proxy
// must apply the versions it is given and reject parameters it cannot.
func TestUpstreamTLSParams(t *testing.T) {
	socket := func(p *tlsv3.TlsParameters) *corev3.TransportSocket {
		a, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "a.internal", CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: p}})
		if err != nil {
			t.Fatal(err)
		}
		return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	for _, tc := range []struct {
		name     string
		params   *tlsv3.TlsParameters
		min, max uint16
		wantErr  bool
	}{
		{name: "none", params: nil},
		{name: "istio", params: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			min: tls.VersionTLS12, max: tls.VersionTLS13},
		{name: "only 1.2", params: &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}, max: tls.VersionTLS12},
		{name: "cipher suites", params: &tlsv3.TlsParameters{CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256"}}, wantErr: true},
		{name: "unknown version", params: &tlsv3.TlsParameters{TlsMaximumProtocolVersion: 99}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileUpstreamTLS(socket(tc.params))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("compiled, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.MinVersion != tc.min || got.MaxVersion != tc.max {
				t.Errorf("versions = %x..%x, want %x..%x", got.MinVersion, got.MaxVersion, tc.min, tc.max)
			}
		})
	}
}

// Success-rate ejection is not implemented: the proxy takes it turned off
// (as Istio and Portico send it) and refuses it turned on.
func TestOutlierSuccessRateOnlyOff(t *testing.T) {
	cluster := func(v uint32) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			OutlierDetection: &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(3), EnforcingSuccessRate: wrapperspb.UInt32(v)}}
	}
	if _, err := CompileCluster(cluster(0)); err != nil {
		t.Errorf("enforcing_success_rate 0: %v", err)
	}
	if _, err := CompileCluster(cluster(100)); err == nil {
		t.Error("enforcing_success_rate 100 compiled; the proxy cannot honour it")
	}
}
