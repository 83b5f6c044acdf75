package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	_ "github.com/portico-gateway/portico/pkg/envoytypes" // every type a dump packs
)

// dump is a parsed Envoy config dump, resource by resource.
type dump struct {
	bootstrap *adminv3.BootstrapConfigDump
	listeners []*listenerv3.Listener
	routes    []*routev3.RouteConfiguration
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	secrets   []*tlsv3.Secret
	// routesUpdated is when the proxy last loaded a route table (RDS).
	routesUpdated time.Time
}

// proxyConfigKinds are the kinds proxy-config prints, istioctl's names.
var proxyConfigKinds = []string{"listeners", "routes", "clusters", "endpoints", "secrets", "bootstrap", "all"}

func runProxyConfig(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("proxy-config", flag.ContinueOnError)
	file := fl.String("f", "", "a config dump saved from the admin port (curl localhost:15000/config_dump?include_eds)")
	fl.StringVar(file, "file", "", "same as -f")
	admin := fl.String("admin", "", "a proxy's admin address (host:port), e.g. a standalone proxy's 127.0.0.1:15000")
	adminPort := fl.Int("proxy-admin-port", proxyAdminPort, "the admin port inside the pod (POD argument)")
	name := fl.String("name", "", "only resources with this name (listeners, clusters: the name or FQDN; routes: the route table)")
	port := fl.Int("port", 0, "only listeners on / clusters for this port")
	output := fl.String("o", "table", "table | json | yaml (bootstrap: also short)")
	fl.StringVar(output, "output", "table", "same as -o")
	var kf kubeFlags
	kf.register(fl)
	fl.SetOutput(io.Discard)
	pos, err := parseFlags(fl, args, stdout)
	if err != nil {
		return fmt.Errorf("proxy-config: %w", err)
	}
	if len(pos) == 0 {
		return errors.New("proxy-config: which? " + strings.Join(proxyConfigKinds, ", "))
	}
	kind, pod := pos[0], ""
	if len(pos) > 1 {
		pod = pos[1]
	}
	if len(pos) > 2 {
		return fmt.Errorf("proxy-config: unexpected arguments %q", pos[2:])
	}
	if !knownKind(kind) {
		return fmt.Errorf("proxy-config: unknown %q: want %s", kind, strings.Join(proxyConfigKinds, ", "))
	}
	var raw []byte
	switch n := btoi(*file != "") + btoi(*admin != "") + btoi(pod != ""); {
	case n > 1:
		return errors.New("proxy-config: one source: a POD, -f DUMP.json or --admin HOST:PORT")
	case *file != "":
		raw, err = os.ReadFile(*file)
	case *admin != "":
		raw, err = get(*admin, "/config_dump?include_eds")
	case pod != "":
		raw, err = podConfigDump(&kf, pod, *adminPort)
	default:
		return errors.New("proxy-config: no source: a POD[.NAMESPACE] (through the API server), -f DUMP.json or --admin HOST:PORT")
	}
	if err != nil {
		return err
	}
	d, err := parseDump(raw)
	if err != nil {
		return err
	}
	f := filter{name: *name, port: *port}
	if kind == "bootstrap" {
		return writeBootstrap(stdout, d, *output)
	}
	if *output != "table" {
		return writeResources(stdout, d.selected(kind, f), *output)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 1, ' ', 0)
	defer tw.Flush()
	switch kind {
	case "listener", "listeners":
		listenerTable(tw, d, f)
	case "route", "routes":
		routeTable(tw, d, f)
	case "cluster", "clusters":
		clusterTable(tw, d, f)
	case "endpoint", "endpoints":
		endpointTable(tw, d, f)
	case "secret", "secrets":
		secretTable(tw, d, time.Now())
	case "all":
		if v := d.envoyVersion(); v != "" {
			fmt.Fprintf(tw, "Envoy Version: %s\n\n", v) // istioctl's first line
		}
		for i, section := range []func(){
			func() { clusterTable(tw, d, f) }, func() { listenerTable(tw, d, f) }, func() { routeTable(tw, d, f) },
			func() { endpointTable(tw, d, f) }, func() { secretTable(tw, d, time.Now()) },
		} {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			section()
		}
	}
	return nil
}

func knownKind(kind string) bool {
	for _, k := range proxyConfigKinds {
		if kind == k || kind+"s" == k {
			return true
		}
	}
	return false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// podConfigDump reads a proxy pod's /config_dump through a port-forward
// to its admin port, as istioctl does.
func podConfigDump(kf *kubeFlags, arg string, adminPort int) ([]byte, error) {
	c, err := kf.connect()
	if err != nil {
		return nil, err
	}
	ctx, cancel := commandContext()
	defer cancel()
	ns, name, err := c.resolvePod(ctx, arg)
	if err != nil {
		return nil, err
	}
	return c.getVia(ctx, ns, name, adminPort, "/config_dump?include_eds")
}

type filter struct {
	name string
	port int
}

// parseDump reads Envoy's /config_dump JSON (Portico's or a stock
// Envoy's; unknown fields are skipped, unknown Any types are an error
// naming them).
func parseDump(raw []byte) (*dump, error) {
	var cd adminv3.ConfigDump
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &cd); err != nil {
		return nil, fmt.Errorf("reading the config dump: %w", err)
	}
	d := &dump{}
	for _, a := range cd.Configs {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("reading the config dump: %w", err)
		}
		if err := d.add(m); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func unpack[T proto.Message](a *anypb.Any, into T) (T, bool, error) {
	if a == nil {
		return into, false, nil
	}
	if err := a.UnmarshalTo(into); err != nil {
		return into, false, fmt.Errorf("reading %s in the config dump: %w", a.TypeUrl, err)
	}
	return into, true, nil
}

func (d *dump) add(m proto.Message) error {
	switch v := m.(type) {
	case *adminv3.BootstrapConfigDump:
		d.bootstrap = v
	case *adminv3.ListenersConfigDump:
		for _, l := range v.StaticListeners {
			if x, ok, err := unpack(l.Listener, &listenerv3.Listener{}); err != nil {
				return err
			} else if ok {
				d.listeners = append(d.listeners, x)
			}
		}
		for _, l := range v.DynamicListeners {
			if l.ActiveState == nil {
				continue
			}
			if x, ok, err := unpack(l.ActiveState.Listener, &listenerv3.Listener{}); err != nil {
				return err
			} else if ok {
				d.listeners = append(d.listeners, x)
			}
		}
	case *adminv3.RoutesConfigDump:
		for _, r := range v.StaticRouteConfigs {
			if x, ok, err := unpack(r.RouteConfig, &routev3.RouteConfiguration{}); err != nil {
				return err
			} else if ok {
				d.routes = append(d.routes, x)
			}
		}
		for _, r := range v.DynamicRouteConfigs {
			if t := r.GetLastUpdated(); t != nil && t.AsTime().After(d.routesUpdated) {
				d.routesUpdated = t.AsTime()
			}
			if x, ok, err := unpack(r.RouteConfig, &routev3.RouteConfiguration{}); err != nil {
				return err
			} else if ok {
				d.routes = append(d.routes, x)
			}
		}
	case *adminv3.ClustersConfigDump:
		for _, c := range v.StaticClusters {
			if x, ok, err := unpack(c.Cluster, &clusterv3.Cluster{}); err != nil {
				return err
			} else if ok {
				d.clusters = append(d.clusters, x)
			}
		}
		for _, c := range v.DynamicActiveClusters {
			if x, ok, err := unpack(c.Cluster, &clusterv3.Cluster{}); err != nil {
				return err
			} else if ok {
				d.clusters = append(d.clusters, x)
			}
		}
	case *adminv3.EndpointsConfigDump:
		for _, e := range v.DynamicEndpointConfigs {
			if x, ok, err := unpack(e.EndpointConfig, &endpointv3.ClusterLoadAssignment{}); err != nil {
				return err
			} else if ok {
				d.endpoints = append(d.endpoints, x)
			}
		}
	case *adminv3.SecretsConfigDump:
		for _, s := range v.DynamicActiveSecrets {
			if x, ok, err := unpack(s.Secret, &tlsv3.Secret{}); err != nil {
				return err
			} else if ok {
				d.secrets = append(d.secrets, x)
			}
		}
	}
	return nil
}

func (d *dump) selected(kind string, f filter) []proto.Message {
	var out []proto.Message
	switch kind {
	case "listener", "listeners", "all":
		for _, l := range d.listeners {
			if f.keepListener(l) {
				out = append(out, l)
			}
		}
		if kind != "all" {
			return out
		}
		fallthrough
	case "route", "routes":
		for _, r := range d.routes {
			if f.name == "" || r.Name == f.name {
				out = append(out, r)
			}
		}
		if kind != "all" {
			return out
		}
		fallthrough
	case "cluster", "clusters":
		for _, c := range d.clusters {
			if f.keepCluster(c.Name) {
				out = append(out, c)
			}
		}
		if kind != "all" {
			return out
		}
		fallthrough
	case "endpoint", "endpoints":
		for _, e := range d.endpoints {
			if f.keepCluster(e.ClusterName) {
				out = append(out, e)
			}
		}
		if kind != "all" {
			return out
		}
		fallthrough
	case "secret", "secrets":
		for _, s := range d.secrets {
			out = append(out, s)
		}
	}
	return out
}

func writeResources(w io.Writer, list []proto.Message, format string) error {
	var parts [][]byte
	for _, m := range list {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return err
		}
		parts = append(parts, b)
	}
	// protojson varies its whitespace on purpose; re-indent for output
	// that is stable from run to run (Envoy's field names, proto order).
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte("["+string(joinBytes(parts, ","))+"]"), "", "  "); err != nil {
		return err
	}
	js := buf.String()
	switch format {
	case "json":
		_, err := fmt.Fprintln(w, js)
		return err
	case "yaml":
		var v any
		if err := yamlUnmarshalJSON([]byte(js), &v); err != nil {
			return err
		}
		return writeYAML(w, v)
	}
	return fmt.Errorf("proxy-config: -o %q: want table, json or yaml", format)
}

func joinBytes(parts [][]byte, sep string) []byte {
	var out []byte
	for i, p := range parts {
		if i > 0 {
			out = append(out, sep...)
		}
		out = append(out, p...)
	}
	return out
}

func listenerPort(l *listenerv3.Listener) (string, int) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return "", 0
	}
	return sa.GetAddress(), int(sa.GetPortValue())
}

func (f filter) keepListener(l *listenerv3.Listener) bool {
	_, p := listenerPort(l)
	return (f.name == "" || l.Name == f.name) && (f.port == 0 || p == f.port)
}

// istioCluster splits Istio's cluster name: direction|port|subset|fqdn.
func istioCluster(name string) (direction, port, subset, fqdn string, ok bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 {
		return "", "", "", name, false
	}
	return parts[0], parts[1], parts[2], parts[3], true
}

func (f filter) keepCluster(name string) bool {
	_, port, _, fqdn, _ := istioCluster(name)
	if f.name != "" && name != f.name && fqdn != f.name {
		return false
	}
	return f.port == 0 || port == strconv.Itoa(f.port)
}

func listenerTable(w io.Writer, d *dump, f filter) {
	fmt.Fprintln(w, "ADDRESSES\tPORT\tMATCH\tDESTINATION")
	for _, l := range d.listeners {
		if !f.keepListener(l) {
			continue
		}
		addr, port := listenerPort(l)
		for _, fc := range l.FilterChains {
			match := "ALL"
			if sni := fc.GetFilterChainMatch().GetServerNames(); len(sni) > 0 {
				match = "SNI: " + strings.Join(sni, ",")
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", addr, port, match, chainDestination(fc))
		}
	}
}

// chainDestination is what a filter chain hands traffic to, as istioctl
// prints it: "Route: http.80", "Cluster: outbound|3306||mysql…".
func chainDestination(fc *listenerv3.FilterChain) string {
	for _, nf := range fc.Filters {
		switch a := nf.GetTypedConfig(); {
		case a == nil:
		case a.MessageIs(&hcmv3.HttpConnectionManager{}):
			var h hcmv3.HttpConnectionManager
			if a.UnmarshalTo(&h) == nil {
				if rds := h.GetRds(); rds != nil {
					return "Route: " + rds.RouteConfigName
				}
				return "Inline Route: " + h.GetRouteConfig().GetName()
			}
		case a.MessageIs(&tcpproxyv3.TcpProxy{}):
			var t tcpproxyv3.TcpProxy
			if a.UnmarshalTo(&t) == nil {
				if c := t.GetCluster(); c != "" {
					return "Cluster: " + c
				}
				var names []string
				for _, wc := range t.GetWeightedClusters().GetClusters() {
					names = append(names, wc.Name)
				}
				return "Clusters: " + strings.Join(names, ",")
			}
		}
	}
	return "Non-HTTP/Non-TCP"
}

func routeTable(w io.Writer, d *dump, f filter) {
	fmt.Fprintln(w, "NAME\tVHOST NAME\tDOMAINS\tMATCH\tVIRTUAL SERVICE")
	for _, rc := range d.routes {
		if f.name != "" && rc.Name != f.name {
			continue
		}
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", rc.Name, vh.Name, domains(vh.Domains), routeMatch(r.GetMatch()), istioConfig(r.GetMetadata(), "virtual-service"))
			}
		}
	}
}

// domains prints istioctl's short form: the first domain and how many more.
func domains(d []string) string {
	switch len(d) {
	case 0:
		return ""
	case 1:
		return d[0]
	}
	return fmt.Sprintf("%s +%d more...", d[0], len(d)-1)
}

func routeMatch(m *routev3.RouteMatch) string {
	switch {
	case m == nil:
		return ""
	case m.GetPrefix() != "":
		return m.GetPrefix() + "*"
	case m.GetPath() != "":
		return m.GetPath()
	case m.GetSafeRegex() != nil:
		return m.GetSafeRegex().GetRegex()
	case m.GetPathSeparatedPrefix() != "":
		return m.GetPathSeparatedPrefix() + "/*"
	}
	return "/*"
}

// istioConfig reads metadata filter_metadata.istio.config
// ("/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME") as
// istioctl prints it: "NAME.NS"; "-" when the resource came from no such
// object (istioctl's placeholder).
func istioConfig(md *corev3.Metadata, kind string) string {
	v := md.GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue()
	parts := strings.Split(v, "/")
	for i := 0; i+3 < len(parts); i++ {
		if parts[i] == "namespaces" && parts[i+2] == kind {
			return parts[i+3] + "." + parts[i+1]
		}
	}
	return "-"
}

func clusterTable(w io.Writer, d *dump, f filter) {
	fmt.Fprintln(w, "SERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE")
	for _, c := range d.clusters {
		if !f.keepCluster(c.Name) {
			continue
		}
		dir, port, subset, fqdn, ok := istioCluster(c.Name)
		if !ok {
			port, subset, dir = "-", "-", "-"
		}
		if subset == "" {
			subset = "-"
		}
		typ := c.GetType().String()
		if c.GetClusterType() != nil {
			typ = c.GetClusterType().GetName()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", fqdn, port, subset, dir, typ, istioConfig(c.GetMetadata(), "destination-rule"))
	}
}

func endpointTable(w io.Writer, d *dump, f filter) {
	fmt.Fprintln(w, "ENDPOINT\tSTATUS\tOUTLIER CHECK\tCLUSTER")
	for _, cla := range d.endpoints {
		if !f.keepCluster(cla.ClusterName) {
			continue
		}
		for _, le := range cla.Endpoints {
			for _, e := range le.LbEndpoints {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				fmt.Fprintf(w, "%s:%d\t%s\tOK\t%s\n", sa.GetAddress(), sa.GetPortValue(), e.GetHealthStatus(), cla.ClusterName)
			}
		}
	}
}

func secretTable(w io.Writer, d *dump, now time.Time) {
	fmt.Fprintln(w, "RESOURCE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE")
	for _, s := range d.secrets {
		var pemBytes []byte
		typ := "Cert Chain"
		switch {
		case s.GetTlsCertificate() != nil:
			pemBytes = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
		case s.GetValidationContext() != nil:
			typ = "CA"
			pemBytes = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
		}
		cert := firstCert(pemBytes)
		if cert == nil {
			fmt.Fprintf(w, "%s\t%s\tACTIVE\tfalse\t\t\t\n", s.Name, typ)
			continue
		}
		valid := !now.Before(cert.NotBefore) && !now.After(cert.NotAfter)
		fmt.Fprintf(w, "%s\t%s\tACTIVE\t%t\t%x\t%s\t%s\n", s.Name, typ, valid, cert.SerialNumber,
			cert.NotAfter.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339))
	}
}

func firstCert(b []byte) *x509.Certificate {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err == nil {
				return c
			}
		}
	}
}
