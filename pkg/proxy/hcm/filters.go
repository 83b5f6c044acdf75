package hcm

import (
	"net/netip"
	"strings"

	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/router"
)

// runFilters runs the connection manager's HTTP filters in configured
// order, after route selection (404s and TLS redirects are answered
// before; nothing reaches an upstream either way). It reports whether the
// request was answered.
func (x *exchange) runFilters(route *router.Route) (done, keep bool) {
	h := x.h
	var s *filters.Stream
	for i := range h.cfg.Steps {
		switch h.cfg.Steps[i].Kind {
		case StepFault:
			if f := route.Fault; f != nil || h.cfg.Fault != nil {
				if f == nil {
					f = h.cfg.Fault
				}
				if done, keep := x.fault(f); done {
					return true, keep
				}
			}
		case StepCORS:
			if route.CORS != nil {
				if done, keep := x.cors(route.CORS); done {
					return true, keep
				}
			}
		default:
			if s == nil {
				s = x.filterStream(route)
			}
			if r := h.filters[i].Decode(s); r != nil {
				x.flags |= r.Flags
				return true, x.reply(r.Status, r.Body, r.Headers)
			}
		}
	}
	return false, true
}

// filterStream is what HTTP filters see of the exchange.
func (x *exchange) filterStream(route *router.Route) *filters.Stream {
	req := x.req
	local := req.LocalAddr
	if p := x.h.cfg.ListenerPort; p != 0 && p <= 0xffff {
		local = netip.AddrPortFrom(local.Addr().Unmap(), uint16(p))
	}
	return &filters.Stream{Req: req, Client: x.clientAddr(), Local: local, Route: route}
}

// clientAddr is Envoy's downstream remote address: with
// use_remote_address the peer, or with xff_num_trusted_hops N the Nth
// address from the right of the x-forwarded-for received; without it the
// (N+1)th from the right. Both are the (N+1)th from the right of x.xff,
// which already ends with the peer when use_remote_address is set. An
// address missing or malformed falls back to the peer, as in Envoy.
func (x *exchange) clientAddr() netip.Addr {
	peer := x.req.RemoteAddr.Addr().Unmap()
	if x.xff == "" {
		return peer
	}
	xff := x.xff
	for skip := x.h.cfg.XFFTrustedHops; ; skip-- {
		i := strings.LastIndexByte(xff, ',')
		if skip == 0 {
			a, err := netip.ParseAddr(strings.TrimSpace(xff[i+1:]))
			if err != nil {
				return peer
			}
			return a.Unmap()
		}
		if i < 0 {
			return peer
		}
		xff = xff[:i]
	}
}
