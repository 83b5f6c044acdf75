package ir

// Redacted returns a copy of the proxy with private keys replaced by
// "[redacted]", for debug output (the controller's /debug/ir, portico
// translate): private keys only ever travel to proxies entitled to them.
func (p *Proxy) Redacted() *Proxy {
	cp := *p
	cp.Secrets = nil
	for _, s := range p.Secrets {
		sc := *s
		if s.Inline != nil {
			in := *s.Inline
			if len(in.PrivateKey) > 0 {
				in.PrivateKey = []byte("[redacted]")
			}
			sc.Inline = &in
		}
		cp.Secrets = append(cp.Secrets, &sc)
	}
	return &cp
}
