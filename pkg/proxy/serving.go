package proxy

import (
	"net"
	"sort"
	"strconv"
)

// ServingListener describes what a running listener serves, for people:
// the standalone welcome message builds its "Try:" commands from it.
type ServingListener struct {
	Name string
	// Port is the configured port; BoundPort where it listens (after
	// --port-map).
	Port      uint32
	BoundPort int
	Chains    []ServingChain
}

// ServingChain is one filter chain of a running listener.
type ServingChain struct {
	// Kind is "http", "https", "tcp", "tls" (terminated, then TCP) or
	// "passthrough".
	Kind string
	// Hosts are the virtual hosts' domains (HTTP) or the server names.
	Hosts []string
	// CertFile is the certificate file a terminating chain serves, when
	// it comes from a file.
	CertFile string
}

// Serving describes every running listener, sorted by name.
func (p *Proxy) Serving() []ServingListener {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ServingListener
	for name, l := range p.activeListeners {
		sl := ServingListener{Name: name, Port: l.value.Port}
		if _, port, err := net.SplitHostPort(p.Listeners.BoundAddress(name)); err == nil {
			sl.BoundPort, _ = strconv.Atoi(port)
		} else {
			continue // not bound (yet)
		}
		for _, c := range l.value.Chains {
			sc := ServingChain{Hosts: append([]string(nil), c.ServerNames...)}
			switch {
			case c.HTTP != nil && c.TLS == nil:
				sc.Kind = "http"
			case c.HTTP != nil:
				sc.Kind = "https"
			case c.TLS != nil:
				sc.Kind = "tls"
			case len(c.ServerNames) > 0 || l.value.TLSInspector:
				sc.Kind = "passthrough"
			default:
				sc.Kind = "tcp"
			}
			if c.HTTP != nil {
				if rc := p.activeRoutes[c.HTTP.RouteConfig]; rc != nil {
					sc.Hosts = nil
					for _, vh := range rc.vhosts {
						sc.Hosts = append(sc.Hosts, vh.domains...)
					}
				}
			}
			if c.TLS != nil {
				for _, s := range c.TLS.CertSecrets {
					if sec := p.secrets[s]; sec != nil && sec.value.CertFile != "" {
						sc.CertFile = sec.value.CertFile
						break
					}
				}
			}
			sl.Chains = append(sl.Chains, sc)
		}
		out = append(out, sl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
