package proxy

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/cespare/xxhash/v2"

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
	// raw is its bytes in the route configuration it last arrived in
	// (which the proxy keeps for /config_dump anyway).
	raw []byte
}

// splitRouteConfiguration is a route configuration's wire bytes split into
// its virtual hosts and the rest.
type splitRouteConfiguration struct {
	shell  []byte   // every field but the virtual hosts
	vhosts [][]byte // each virtual host's bytes, in order
	keys   []string // each virtual host's key: the hash of its bytes
	// same marks the virtual hosts whose bytes are those at the same
	// place in the configuration's last version.
	same []bool
	hash string // of the whole, from the shell and the keys
}

// splitRoutes splits raw, the bytes of a route configuration whose last
// version had the virtual hosts last (nil for none). A virtual host is
// compared with the one at its place in last first: when one host among
// thousands changed, the others' bytes are equal there, and comparing
// bytes costs a third of hashing them (two route configurations of 14 MB
// each at 30,000 routes on one port were hashed whole, and every virtual
// host again, on every change). Only a virtual host found different is
// hashed. The configuration's hash is made from its shell and its virtual
// hosts' keys, which identify their bytes.
func splitRoutes(raw []byte, last []compiledVirtualHost) (*splitRouteConfiguration, error) {
	sp := &splitRouteConfiguration{vhosts: make([][]byte, 0, len(last))}
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if num == virtualHostsField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			sp.vhosts = append(sp.vhosts, v)
			b = b[n+m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		sp.shell = append(sp.shell, b[:n+m]...)
		b = b[n+m:]
	}
	sp.keys = make([]string, len(sp.vhosts))
	sp.same = make([]bool, len(sp.vhosts))
	d := xxhash.New()
	d.Write(sp.shell)
	for i, vb := range sp.vhosts {
		if i < len(last) && bytes.Equal(last[i].raw, vb) {
			sp.keys[i], sp.same[i] = last[i].key, true
		} else {
			sp.keys[i] = hashOf(vb)
		}
		d.WriteString(sp.keys[i])
		d.Write([]byte{0})
	}
	sp.hash = strconv.FormatUint(d.Sum64(), 16) + "." + strconv.Itoa(len(raw))
	return sp, nil
}

// compileRouteConfiguration checks and compiles a split route
// configuration, virtual host by virtual host. A virtual host whose bytes
// are those of one compiled before (in any route configuration) is reused
// without being decoded again: when one VirtualService among thousands
// changes, the route configuration that carries it arrives whole, but only
// its changed virtual host costs anything. prev holds what the last update
// compiled; next receives what this one uses; last is the configuration's
// current table and lastVHosts its virtual hosts (nil for none): the table
// is patched rather than assembled again when few of them changed.
func compileRouteConfiguration(sp *splitRouteConfiguration, prev, next map[string]compiledVirtualHost, last *router.Table, lastVHosts []compiledVirtualHost) (*router.Table, []compiledVirtualHost, error) {
	rc := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(sp.shell, rc); err != nil {
		return nil, nil, err
	}
	if err := supported.Check(rc); err != nil {
		return nil, nil, err
	}
	vhosts := make([]*router.CompiledVirtualHost, 0, len(sp.vhosts))
	used := make([]compiledVirtualHost, 0, len(sp.vhosts))
	for i, vb := range sp.vhosts {
		key := sp.keys[i]
		var c compiledVirtualHost
		ok := false
		if sp.same[i] {
			c, ok = lastVHosts[i], true
		} else if c, ok = next[key]; !ok {
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
		// Its bytes in this configuration, so that an older response's
		// buffer is not kept alive by a virtual host that outlived it.
		c.raw = vb
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
