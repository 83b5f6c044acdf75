package supported_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestEverythingTranslatedIsSupported: every resource the translator emits
// for the golden cases passes the proxy's field check, so the proxy never
// NACKs Portico's own configuration.
func TestEverythingTranslatedIsSupported(t *testing.T) {
	files, _ := filepath.Glob("../../translate/testdata/*.in.yaml")
	if len(files) == 0 {
		t.Fatal("no translate inputs")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p := &ir.Proxy{}
		if err := yaml.Unmarshal(b, p); err != nil {
			t.Fatal(err)
		}
		res, err := translate.Translate(p, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var all []proto.Message
		for _, m := range res.Listeners {
			all = append(all, m)
		}
		for _, m := range res.Routes {
			all = append(all, m)
		}
		for _, m := range res.Clusters {
			all = append(all, m)
		}
		for _, m := range res.Endpoints {
			all = append(all, m)
		}
		for _, m := range res.Secrets {
			all = append(all, m)
		}
		for _, m := range all {
			if err := supported.Check(m); err != nil {
				t.Errorf("%s: %v", filepath.Base(f), err)
			}
		}
	}
}

func TestUnsupportedFieldsAreNamed(t *testing.T) {
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "x", Via: "1.1 envoy"})
	cases := []struct {
		msg  proto.Message
		want string
	}{
		{&clusterv3.Cluster{Name: "c", HealthChecks: []*corev3.HealthCheck{{}}}, "envoy.config.cluster.v3.Cluster.health_checks"},
		{&listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}, "HttpConnectionManager.via"},
		{&listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "x", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"}}}}}}},
			"unsupported extension"},
	}
	for _, c := range cases {
		err := supported.Check(c.msg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%T) = %v, want an error mentioning %q", c.msg, err, c.want)
		}
	}
}
