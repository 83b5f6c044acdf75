// Package configdump renders configuration in the exact shape of Envoy's
// /config_dump (envoy.admin.v3.ConfigDump), so the commands users already
// run against Istio's gateway work unchanged, e.g.
//
//	curl localhost:15000/config_dump | jq '.configs[3].dynamic_route_configs[].route_config.virtual_hosts[]'
//
// configs[] holds, in order: Bootstrap, Clusters, Listeners, Routes,
// Secrets (and Endpoints with include_eds).
package configdump

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Entry is one dynamic resource and when it was applied.
type Entry struct {
	Name     string
	Resource proto.Message
	Version  string
	Updated  time.Time
	// Error is the last rejected update of this resource, if any.
	Error *Failure
}

// Failure is an update that was rejected (NACKed).
type Failure struct {
	Details string
	Version string
	At      time.Time
}

// Input is everything a dump can show.
type Input struct {
	Bootstrap        *bootstrapv3.Bootstrap
	BootstrapUpdated time.Time
	ClustersVersion  string
	Clusters         []Entry
	Listeners        []Entry
	// DrainingListeners are listeners replaced or removed but still
	// finishing connections.
	DrainingListeners []Entry
	Routes            []Entry
	Secrets           []Entry
	Endpoints         []Entry
}

// Query narrows a dump as Envoy's admin parameters do.
type Query struct {
	// Resource keeps only one repeated field, e.g. "dynamic_route_configs",
	// each element becoming one entry of configs[].
	Resource string
	// NameRegex keeps only resources whose name matches.
	NameRegex *regexp.Regexp
	// IncludeEDS adds the endpoints dump.
	IncludeEDS bool
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func pack(m proto.Message) *anypb.Any {
	if m == nil {
		return nil
	}
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}

func failure(f *Failure) *adminv3.UpdateFailureState {
	if f == nil {
		return nil
	}
	return &adminv3.UpdateFailureState{Details: f.Details, VersionInfo: f.Version, LastUpdateAttempt: ts(f.At)}
}

func (q Query) keep(name string) bool { return q.NameRegex == nil || q.NameRegex.MatchString(name) }

// Build assembles the dump.
func Build(in Input, q Query) (*adminv3.ConfigDump, error) {
	boot := &adminv3.BootstrapConfigDump{Bootstrap: in.Bootstrap, LastUpdated: ts(in.BootstrapUpdated)}
	clusters := &adminv3.ClustersConfigDump{VersionInfo: in.ClustersVersion}
	for _, e := range in.Clusters {
		if q.keep(e.Name) {
			clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
				VersionInfo: e.Version, Cluster: pack(e.Resource), LastUpdated: ts(e.Updated), ErrorState: failure(e.Error),
			})
		}
	}
	listeners := &adminv3.ListenersConfigDump{}
	byName := map[string]*adminv3.ListenersConfigDump_DynamicListener{}
	for _, e := range in.Listeners {
		if q.keep(e.Name) {
			l := &adminv3.ListenersConfigDump_DynamicListener{Name: e.Name, ErrorState: failure(e.Error),
				ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: e.Version, Listener: pack(e.Resource), LastUpdated: ts(e.Updated)}}
			byName[e.Name] = l
			listeners.DynamicListeners = append(listeners.DynamicListeners, l)
		}
	}
	for _, e := range in.DrainingListeners {
		if !q.keep(e.Name) {
			continue
		}
		state := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: e.Version, Listener: pack(e.Resource), LastUpdated: ts(e.Updated)}
		if l, ok := byName[e.Name]; ok {
			l.DrainingState = state
			continue
		}
		listeners.DynamicListeners = append(listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{Name: e.Name, DrainingState: state})
	}
	routes := &adminv3.RoutesConfigDump{}
	for _, e := range in.Routes {
		if q.keep(e.Name) {
			routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
				VersionInfo: e.Version, RouteConfig: pack(e.Resource), LastUpdated: ts(e.Updated), ErrorState: failure(e.Error),
			})
		}
	}
	secrets := &adminv3.SecretsConfigDump{}
	for _, e := range in.Secrets {
		if q.keep(e.Name) {
			var sec proto.Message
			if e.Resource != nil {
				sec = Redact(e.Resource)
			}
			secrets.DynamicActiveSecrets = append(secrets.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
				Name: e.Name, VersionInfo: e.Version, LastUpdated: ts(e.Updated), Secret: pack(sec), ErrorState: failure(e.Error),
			})
		}
	}
	dumps := []proto.Message{boot, clusters, listeners, routes, secrets}
	if q.IncludeEDS {
		eds := &adminv3.EndpointsConfigDump{}
		for _, e := range in.Endpoints {
			if q.keep(e.Name) {
				eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
					VersionInfo: e.Version, EndpointConfig: pack(e.Resource), LastUpdated: ts(e.Updated), ErrorState: failure(e.Error),
				})
			}
		}
		dumps = append(dumps, eds)
	}
	out := &adminv3.ConfigDump{}
	if q.Resource == "" {
		for _, d := range dumps {
			out.Configs = append(out.Configs, pack(d))
		}
		return out, nil
	}
	for _, d := range dumps {
		fd := d.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(q.Resource))
		if fd == nil || !fd.IsList() || fd.Kind() != protoreflect.MessageKind {
			continue
		}
		list := d.ProtoReflect().Get(fd).List()
		for i := 0; i < list.Len(); i++ {
			out.Configs = append(out.Configs, pack(list.Get(i).Message().Interface()))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown resource %q (e.g. dynamic_active_clusters, dynamic_listeners, dynamic_route_configs, dynamic_active_secrets)", q.Resource)
}

// Marshal renders a dump as Envoy does: indented JSON with proto field names.
func Marshal(cd *adminv3.ConfigDump) ([]byte, error) {
	return MarshalJSON(cd, false)
}

// MarshalJSON renders a message as stable, indented JSON with proto field
// names (protojson alone varies its whitespace from run to run, which
// makes dumps hard to diff). withDefaults also prints zero values.
func MarshalJSON(m proto.Message, withDefaults bool) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: withDefaults}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", " "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// Redact hides private keys in a secret, as Envoy's dump does.
func Redact(m proto.Message) proto.Message {
	s, ok := m.(*tlsv3.Secret)
	if !ok {
		return m
	}
	c := proto.Clone(s).(*tlsv3.Secret)
	if tc := c.GetTlsCertificate(); tc != nil && tc.PrivateKey != nil {
		if _, isFile := tc.PrivateKey.Specifier.(*corev3.DataSource_Filename); !isFile {
			tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}
		}
	}
	return c
}
