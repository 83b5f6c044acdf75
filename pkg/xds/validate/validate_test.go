package validate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func listener(hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	a, _ := anypb.New(hcm)
	return &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}}}
}

func TestDeep(t *testing.T) {
	router, _ := anypb.New(&routerv3.Router{})
	good := &hcmv3.HttpConnectionManager{StatPrefix: "http", RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}}
	noPrefix := proto.Clone(good).(*hcmv3.HttpConnectionManager)
	noPrefix.StatPrefix = ""
	for _, tc := range []struct {
		name string
		msg  proto.Message
		want string // "" for valid
	}{
		{"valid", listener(good), ""},
		{"invalid inside an Any", listener(noPrefix), "StatPrefix"},
		{"invalid embedded message", &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(-1)}, "ConnectTimeout"},
		{"unknown type in an Any", &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "x", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}}}}}}}, "cannot unpack"},
	} {
		err := Deep(tc.msg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

func TestErrorPathNamesTheFailingMessage(t *testing.T) {
	router, _ := anypb.New(&routerv3.Router{})
	bad := &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}}
	err := Deep(listener(bad))
	want := "envoy.config.listener.v3.Listener.filter_chains[0].filters[0].typed_config<envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager>: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want an error starting %q", err, want)
	}
}

func TestMayHoldAny(t *testing.T) {
	for _, tc := range []struct {
		msg  proto.Message
		want bool
	}{
		{&routev3.Route{}, true},      // typed_per_filter_config
		{&routev3.RouteMatch{}, true}, // StringMatcher.custom is an extension
		{&routev3.RedirectAction{}, false},
		{&structpb.Struct{}, false},        // recursive, but never an Any: metadata is not walked
		{&routev3.WeightedCluster{}, true}, // per-cluster typed_per_filter_config
		{&clusterv3.Cluster{}, true},
	} {
		if got := mayHoldAny(tc.msg.ProtoReflect().Descriptor()); got != tc.want {
			t.Errorf("%T: got %v, want %v", tc.msg, got, tc.want)
		}
	}
}
