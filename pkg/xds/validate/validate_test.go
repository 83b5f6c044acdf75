package validate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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

// rangeAnys is what anys did before anyFields: range over every set
// field, skipping those that cannot lead to an Any; it returns every
// error, not only the first. The reference for
// TestAnyFieldsWalkEqualsRange.
func rangeAnys(m protoreflect.Message) []error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return []error{&pathError{err: fmt.Errorf("cannot unpack %s: %w", a.GetTypeUrl(), err)}}
		}
		name := "<" + string(inner.ProtoReflect().Descriptor().FullName()) + ">"
		if v, ok := inner.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				return []error{prefix(&pathError{err: err}, name)}
			}
		}
		var out []error
		for _, err := range rangeAnys(inner.ProtoReflect()) {
			out = append(out, prefix(err, name))
		}
		return out
	}
	var found []error
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if !fieldMayHoldAny(fd) {
			return true
		}
		switch {
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				for _, err := range rangeAnys(v.Message()) {
					found = append(found, prefix(err, fmt.Sprintf(".%s[%v]", fd.Name(), k.Interface())))
				}
				return true
			})
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				for _, err := range rangeAnys(l.Get(i).Message()) {
					found = append(found, prefix(err, fmt.Sprintf(".%s[%d]", fd.Name(), i)))
				}
			}
		default:
			for _, err := range rangeAnys(val.Message()) {
				found = append(found, prefix(err, "."+string(fd.Name())))
			}
		}
		return true
	})
	return found
}

// fill sets random fields of m, down to depth levels, putting one of
// anys into every Any it sets.
func fill(r *rand.Rand, m protoreflect.Message, depth int, pool []*anypb.Any) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		proto.Merge(a, pool[r.IntN(len(pool))])
		return
	}
	fds := m.Descriptor().Fields()
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if r.IntN(3) != 0 || depth == 0 && FieldMessage(fd) != nil {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && m.WhichOneof(od) != nil {
			continue
		}
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() != protoreflect.StringKind || fd.MapValue().Message() == nil {
				continue
			}
			mp := m.Mutable(fd).Map()
			for k := range 1 + r.IntN(2) {
				v := mp.NewValue()
				fill(r, v.Message(), depth-1, pool)
				mp.Set(protoreflect.ValueOfString(fmt.Sprint("k", k)).MapKey(), v)
			}
		case fd.IsList():
			if fd.Message() == nil {
				continue
			}
			l := m.Mutable(fd).List()
			for range 1 + r.IntN(2) {
				v := l.NewElement()
				fill(r, v.Message(), depth-1, pool)
				l.Append(v)
			}
		case fd.Message() != nil:
			fill(r, m.Mutable(fd).Message(), depth-1, pool)
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(fmt.Sprint("s", r.IntN(3))))
		case fd.Kind() == protoreflect.BoolKind:
			m.Set(fd, protoreflect.ValueOfBool(true))
		}
	}
}

// TestAnyFieldsWalkEqualsRange checks the walk over anyFields against a
// walk over every set field on random routes, clusters and listeners
// with valid, invalid and unknown Anys anywhere: both must find an
// invalid Any in the same messages, and the first error the walk reports
// must be one of those the reference finds (map order is random in
// both).
func TestAnyFieldsWalkEqualsRange(t *testing.T) {
	router, _ := anypb.New(&routerv3.Router{})
	badHCM, _ := anypb.New(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{}})
	unknown := &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}
	pool := []*anypb.Any{router, router, router, badHCM, unknown}
	r := rand.New(rand.NewPCG(1, 2))
	failed := 0
	memo := NewValidator()
	for i := range 3000 {
		var m proto.Message
		switch i % 3 {
		case 0:
			m = &routev3.VirtualHost{}
		case 1:
			m = &clusterv3.Cluster{}
		default:
			m = &listenerv3.Listener{}
		}
		fill(r, m.ProtoReflect(), 1+r.IntN(5), pool)
		got, want := (*Validator)(nil).anys(m.ProtoReflect()), rangeAnys(m.ProtoReflect())
		// Through a memo of every payload found valid so far: the same
		// answer, and an error the reference finds too.
		if cached := memo.anys(m.ProtoReflect()); (cached == nil) != (got == nil) ||
			cached != nil && !slices.ContainsFunc(want, func(e error) bool { return e.Error() == cached.Error() }) {
			t.Fatalf("%d: %T: with the memo %v, without %v", i, m, cached, got)
		}
		if (got == nil) != (len(want) == 0) {
			t.Fatalf("%d: %T: walk %v, reference %v", i, m, got, want)
		}
		if got != nil {
			failed++
			if !slices.ContainsFunc(want, func(e error) bool { return e.Error() == got.Error() }) {
				t.Fatalf("%d: %T: walk reports %q, not among the reference's %q", i, m, got, want)
			}
		}
	}
	if memo.hits == 0 || memo.n == 0 {
		t.Fatalf("the memo kept %d payloads and answered %d times: the generator repeats none", memo.n, memo.hits)
	}
	if failed < 300 || failed > 2700 {
		t.Fatalf("%d of 3000 random messages had an invalid Any: the generator does not exercise both outcomes", failed)
	}
}
