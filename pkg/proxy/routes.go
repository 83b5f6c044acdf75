package proxy

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
)

// virtualHostsField is RouteConfiguration.virtual_hosts.
var virtualHostsField = (&routev3.RouteConfiguration{}).ProtoReflect().Descriptor().Fields().ByName("virtual_hosts").Number()

// routeConfigType decodes kept route configurations.
var routeConfigType = (&routev3.RouteConfiguration{}).ProtoReflect().Type()

// compiledVirtualHost is a virtual host checked and compiled, remembered by
// the hash of its bytes (key).
type compiledVirtualHost struct {
	key     string
	domains []string // as received
	vh      *router.CompiledVirtualHost
}

// compileRouteConfiguration checks and compiles a route configuration from
// its wire bytes, virtual host by virtual host. A virtual host whose bytes
// are those of one compiled before (in any route configuration) is reused
// without being decoded again: when one VirtualService among thousands
// changes, the route configuration that carries it arrives whole, but only
// its changed virtual host costs anything. prev holds what the last update
// compiled; next receives what this one uses; last is the configuration's
// current table (nil for none), patched rather than assembled again when
// few of its virtual hosts changed.
func compileRouteConfiguration(raw []byte, prev, next map[string]compiledVirtualHost, last *router.Table) (*router.Table, []compiledVirtualHost, error) {
	var shellBytes []byte
	var vhostBytes [][]byte
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		if num == virtualHostsField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			vhostBytes = append(vhostBytes, v)
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, protowire.ParseError(m)
		}
		shellBytes = append(shellBytes, b[:n+m]...)
		b = b[n+m:]
	}
	rc := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(shellBytes, rc); err != nil {
		return nil, nil, err
	}
	if err := supported.Check(rc); err != nil {
		return nil, nil, err
	}
	vhosts := make([]*router.CompiledVirtualHost, 0, len(vhostBytes))
	used := make([]compiledVirtualHost, 0, len(vhostBytes))
	for i, vb := range vhostBytes {
		key := hashOf(vb)
		c, ok := next[key]
		if !ok {
			c, ok = prev[key]
		}
		if !ok {
			msg := &routev3.VirtualHost{}
			if err := proto.Unmarshal(vb, msg); err != nil {
				return nil, nil, fmt.Errorf("virtual_hosts[%d]: %w", i, err)
			}
			if err := supported.Check(msg); err != nil {
				return nil, nil, fmt.Errorf("virtual host %s: %w", msg.Name, err)
			}
			vh, err := router.CompileVirtualHost(msg)
			if err != nil {
				return nil, nil, err
			}
			c = compiledVirtualHost{key: key, domains: msg.Domains, vh: vh}
		}
		next[key] = c
		used = append(used, c)
		vhosts = append(vhosts, c.vh)
	}
	t, err := router.AssembleFrom(last, rc.Name, rc.IgnorePortInHostMatching, vhosts)
	if err != nil {
		return nil, nil, err
	}
	return t, used, nil
}
