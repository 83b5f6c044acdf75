package controller

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	networking "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/xds"
)

// proxyReports remembers what connected proxies say they cannot serve
// (their standing NACKs of listeners and secrets), so that each build puts
// it on the Gateway servers concerned: a user reading the Gateway's status
// learns that port 80 is not served because another process holds it on
// the node, or that the certificate file is missing, not merely that the
// configuration is valid.
type proxyReports struct {
	mu     sync.Mutex
	byNode map[string]map[string]xds.ProxyReport // node → type → report
}

// onProxyReport records a proxy's verdict and, when it changed, asks for
// a build so statuses follow. Called with the xDS server's lock held: it
// only records and signals.
func (c *Controller) onProxyReport(r xds.ProxyReport) {
	if r.TypeURL != resourcev3.ListenerType && r.TypeURL != resourcev3.SecretType {
		return
	}
	c.reports.mu.Lock()
	if c.reports.byNode == nil {
		c.reports.byNode = map[string]map[string]xds.ProxyReport{}
	}
	types := c.reports.byNode[r.Node]
	if r.Detail == "" {
		delete(types, r.TypeURL)
		if len(types) == 0 {
			delete(c.reports.byNode, r.Node)
		}
	} else {
		if types == nil {
			types = map[string]xds.ProxyReport{}
			c.reports.byNode[r.Node] = types
		}
		types[r.TypeURL] = r
	}
	c.reports.mu.Unlock()
	c.rebuild()
}

// rebuild asks the build loop to build the last resources again. It never
// blocks; before the first resources arrive there is nothing to build.
func (c *Controller) rebuild() {
	c.mu.Lock()
	if c.pending == nil {
		c.pending = c.last
	}
	ok := c.pending != nil
	c.mu.Unlock()
	if ok {
		select {
		case c.updates <- struct{}{}:
		default:
		}
	}
}

func (r *proxyReports) list() []xds.ProxyReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []xds.ProxyReport
	for _, types := range r.byNode {
		for _, rep := range types {
			out = append(out, rep)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].TypeURL < out[j].TypeURL
	})
	return out
}

// annotate adds to a build's result what only the running system knows:
// what proxies reported they cannot serve (on the Gateway servers
// concerned), and a warning for connected proxies no Gateway selects. The
// result is copied where it changes, never modified.
func (c *Controller) annotate(result *gateway.Result, res *resource.Resources) *gateway.Result {
	c.warnUnselected(result)
	msgs := proxyMessages(c.reports.list(), result, res)
	if len(msgs) == 0 {
		return result
	}
	out := *result
	out.Statuses = slices.Clone(result.Statuses)
	for i, st := range out.Statuses {
		if ms := msgs[st.Key]; len(ms) > 0 {
			out.Statuses[i] = st.WithMessages(ms...)
		}
	}
	return &out
}

// finding is one problem a proxy reported, on one Gateway server.
type finding struct {
	gw      resource.Key
	code    status.Code
	reason  string
	field   string
	message string // with %s for the proxies
}

// proxyMessages maps proxies' reports to messages on Gateways. A report
// names listeners (LDS) and secrets (SDS) as the translator named them;
// the class's IR says which Gateways they come from, and each Gateway's
// spec which server (by port, and by certificate for secrets). Proxies
// reporting the same problem are named in one message.
func proxyMessages(reps []xds.ProxyReport, result *gateway.Result, res *resource.Resources) map[resource.Key][]status.Message {
	if len(reps) == 0 {
		return nil
	}
	proxies := map[string]*ir.Proxy{}
	for _, p := range result.Proxies {
		proxies[p.Name] = p
	}
	gateways := map[resource.Key]*networking.Gateway{}
	for _, gw := range res.Gateways {
		gateways[resource.KeyOf(gw)] = gw
	}
	nodes := map[finding][]string{}
	var order []finding
	add := func(f finding, node string) {
		if _, ok := nodes[f]; !ok {
			order = append(order, f)
		}
		if !slices.Contains(nodes[f], node) {
			nodes[f] = append(nodes[f], node)
		}
	}
	for _, r := range reps {
		p := proxies[r.Class]
		if p == nil {
			continue
		}
		for _, line := range strings.Split(r.Detail, "\n") {
			switch r.TypeURL {
			case resourcev3.ListenerType:
				for _, l := range p.Listeners {
					why, ok := after(line, l.Name)
					if !ok || strings.Contains(why, ": secret ") {
						continue // certificates are reported, better, by SDS
					}
					reason := status.ReasonProxyRejected
					if strings.Contains(why, "cannot bind") {
						reason = status.ReasonPortUnavailable
					}
					for _, src := range l.Sources {
						gw := gatewayKey(src)
						for _, field := range serversOnPort(gateways[gw], l.Port) {
							add(finding{gw: gw, code: status.GatewayNotServed, reason: reason, field: field + ".port",
								message: fmt.Sprintf("%%s cannot serve port %d (listener %s): %s", l.Port, l.Name, why)}, r.Node)
						}
					}
				}
			case resourcev3.SecretType:
				for _, sec := range p.Secrets {
					why, ok := after(line, sec.Name)
					if !ok {
						continue
					}
					for _, use := range secretUses(p, sec.Name) {
						for _, field := range serversUsingSecret(gateways[use.gw], use.port, sec.Name) {
							add(finding{gw: use.gw, code: status.InvalidGatewayCredential, reason: status.ReasonInvalidCertificate, field: field + ".tls",
								message: fmt.Sprintf("%%s cannot load %s for port %d: %s", sec.Name, use.port, why)}, r.Node)
						}
					}
				}
			}
		}
	}
	out := map[resource.Key][]status.Message{}
	for _, f := range order {
		who := "proxy " + nodes[f][0]
		if len(nodes[f]) > 1 {
			sort.Strings(nodes[f])
			who = "proxies " + strings.Join(nodes[f], ", ")
		}
		out[f.gw] = append(out[f.gw], status.Message{Code: f.code, Level: status.Error, Reason: f.reason, Field: f.field,
			Message: fmt.Sprintf(f.message, who)})
	}
	return out
}

// after finds "<name>:" in a report line, as a whole word (0.0.0.0_80 is
// not 0.0.0.0_8080), and returns what follows.
func after(line, name string) (string, bool) {
	for from := 0; ; {
		i := strings.Index(line[from:], name+":")
		if i < 0 {
			return "", false
		}
		i += from
		if i == 0 || strings.ContainsRune(" (\t", rune(line[i-1])) {
			return strings.TrimSpace(line[i+len(name)+1:]), true
		}
		from = i + 1
	}
}

func gatewayKey(r ir.Ref) resource.Key {
	return resource.Key{Kind: resource.KindGateway, Namespace: r.Namespace, Name: r.Name}
}

// serversOnPort lists the fields of a Gateway's servers on a port.
func serversOnPort(gw *networking.Gateway, port uint32) []string {
	if gw == nil {
		return nil
	}
	var out []string
	for i, s := range gw.Spec.Servers {
		if s.GetPort().GetNumber() == port {
			out = append(out, fmt.Sprintf("spec.servers[%d]", i))
		}
	}
	return out
}

type secretUse struct {
	gw   resource.Key
	port uint32
}

// secretUses lists the Gateways and ports whose filter chains use a secret.
func secretUses(p *ir.Proxy, name string) []secretUse {
	seen := map[secretUse]bool{}
	var out []secretUse
	for _, l := range p.Listeners {
		for _, fc := range l.FilterChains {
			if fc.TLS == nil || !slices.Contains(fc.TLS.CertificateSecrets, name) && fc.TLS.ValidationSecret != name {
				continue
			}
			for _, src := range fc.Sources {
				if src.Kind != resource.KindGateway {
					continue
				}
				u := secretUse{gw: gatewayKey(src), port: l.Port}
				if !seen[u] {
					seen[u] = true
					out = append(out, u)
				}
			}
		}
	}
	return out
}

// serversUsingSecret lists the fields of a Gateway's TLS servers on a port
// that name the secret (by credentialName or file paths); if none names
// it exactly, every TLS server on the port.
func serversUsingSecret(gw *networking.Gateway, port uint32, name string) []string {
	if gw == nil {
		return nil
	}
	var exact, onPort []string
	for i, s := range gw.Spec.Servers {
		t := s.GetTls()
		if s.GetPort().GetNumber() != port || t == nil {
			continue
		}
		field := fmt.Sprintf("spec.servers[%d]", i)
		onPort = append(onPort, field)
		cred := t.GetCredentialName()
		if cred != "" && (name == ir.KubernetesSecretName(cred) || name == ir.KubernetesSecretName(cred+"-cacert")) ||
			name == ir.FileCertSecretName(t.GetServerCertificate(), t.GetPrivateKey()) ||
			t.GetCaCertificates() != "" && name == ir.FileRootSecretName(t.GetCaCertificates()) {
			exact = append(exact, field)
		}
	}
	if len(exact) > 0 {
		return exact
	}
	return onPort
}

// Unselected is a class of connected proxies that no Gateway selects:
// they serve nothing, which is rarely what their owner wants.
type Unselected struct {
	Class   string   `json:"class"`
	Proxies []string `json:"proxies"`
	Message string   `json:"message"`
}

// unselected lists connected proxy classes that no Gateway of the result
// selects.
func (c *Controller) unselected(result *gateway.Result) []Unselected {
	byClass := map[string][]string{}
	for _, n := range c.xds.Nodes() {
		byClass[n.Class] = append(byClass[n.Class], n.ID)
	}
	selected := map[string]bool{}
	for _, p := range result.Proxies {
		if len(p.Gateways) > 0 {
			selected[p.Name] = true
		}
	}
	var out []Unselected
	for _, class := range slices.Sorted(maps.Keys(byClass)) {
		if selected[class] {
			continue
		}
		ids := byClass[class]
		sort.Strings(ids)
		out = append(out, Unselected{Class: class, Proxies: ids, Message: fmt.Sprintf(
			"no Gateway selects proxies with labels %q (%s), so they serve nothing: a Gateway's spec.selector must match a subset of these labels",
			class, strings.Join(ids, ", "))})
	}
	return out
}

// warnUnselected logs, once per change, the connected proxy classes no
// Gateway selects.
func (c *Controller) warnUnselected(result *gateway.Result) {
	list := c.unselected(result)
	key := fmt.Sprint(list)
	c.reports.mu.Lock()
	changed := key != c.lastUnselected
	c.lastUnselected = key
	c.reports.mu.Unlock()
	if !changed {
		return
	}
	for _, u := range list {
		c.log.Info("warning: "+u.Message, "severity", "warning", "class", u.Class, "proxies", u.Proxies)
	}
}
