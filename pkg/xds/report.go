package xds

// ProxyReport is a change in what a proxy says about a type it was sent:
// Detail is the error of its NACK, "" once it ACKs again (or leaves).
type ProxyReport struct {
	Node    string
	Class   string
	TypeURL string
	Detail  string
}

// OnReport registers f to hear every change in a proxy's verdict on a
// type: a new or different NACK, and the ACK (or disconnect) that ends
// one. The controller uses it to put what proxies cannot serve (a port in
// use, a certificate file missing) on the Gateways concerned. f runs with
// the server's lock held: it must return quickly and must not call the
// Server.
func (s *Server) OnReport(f func(ProxyReport)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReport = f
}

// notifyReport calls the report hook; s.mu is held.
func (s *Server) notifyReport(n *Node, typeURL, detail string) {
	if s.onReport != nil {
		s.onReport(ProxyReport{Node: n.ID, Class: n.Class, TypeURL: typeURL, Detail: detail})
	}
}
