package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/portico-gateway/portico/pkg/xds"
)

// typeColumns are istioctl proxy-status's columns, in its order, with the
// short type names the controller reports.
var typeColumns = []struct{ column, typ string }{
	{"CDS", "Cluster"}, {"LDS", "Listener"}, {"EDS", "ClusterLoadAssignment"}, {"RDS", "RouteConfiguration"}, {"SDS", "Secret"},
}

// controllerSource is where the controller's debug endpoints are: an
// address (standalone, or a port-forward made by hand), or every
// controller pod of a cluster, each through its own port-forward.
type controllerSource struct {
	addr    string
	cluster *cluster
}

// controllerFlags registers --controller next to the cluster flags.
func controllerFlags(fl *flag.FlagSet, kf *kubeFlags) *string {
	kf.register(fl)
	return fl.String("controller", "", "the controller's debug address (host:port); default: the controller pods of the kubeconfig's cluster through port-forwards, else 127.0.0.1:15014")
}

func (kf *kubeFlags) controllerSource(addr string) (*controllerSource, error) {
	if addr != "" {
		return &controllerSource{addr: addr}, nil
	}
	if !kf.available() {
		return &controllerSource{addr: "127.0.0.1:15014"}, nil
	}
	c, err := kf.connect()
	if err != nil {
		return nil, err
	}
	return &controllerSource{cluster: c}, nil
}

// controllerAnswer is one controller's answer to a debug path.
type controllerAnswer struct {
	pod  string // the controller pod, in cluster mode
	body []byte
	err  error
}

// getAll asks every controller (one address, or each running controller
// pod) for path.
func (s *controllerSource) getAll(ctx context.Context, path string) ([]controllerAnswer, error) {
	if s.cluster == nil {
		b, err := get(s.addr, path)
		if err != nil {
			return nil, err
		}
		return []controllerAnswer{{body: b}}, nil
	}
	pods, err := s.cluster.controllerPods(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]controllerAnswer, 0, len(pods))
	for _, p := range pods {
		b, err := s.cluster.getVia(ctx, p.Namespace, p.Name, controllerDebugPort, path)
		out = append(out, controllerAnswer{pod: p.Name + "." + p.Namespace, body: b, err: err})
	}
	return out, nil
}

// proxyStatusRow is one proxy as one controller reports it.
type proxyStatusRow struct {
	xds.ProxyStatus
	Controller string `json:"controller,omitempty"`
}

// proxyName is istioctl's NAME column: pod.namespace.
func proxyName(p xds.ProxyStatus) string {
	if p.Namespace == "" {
		return p.ID
	}
	return p.ID + "." + p.Namespace
}

func runProxyStatus(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("proxy-status", flag.ContinueOnError)
	var kf kubeFlags
	controller := controllerFlags(fl, &kf)
	admin := fl.String("admin", "", "with a PROXY: the proxy's admin address (host:port) to diff against, instead of a port-forward to the pod")
	file := fl.String("f", "", "with a PROXY: the proxy's config dump saved in a file (curl :15000/config_dump?include_eds), to diff against")
	fl.StringVar(file, "file", "", "same as -f")
	adminPort := fl.Int("proxy-admin-port", proxyAdminPort, "the admin port inside the proxy pod")
	output := fl.String("o", "table", "table | json")
	fl.StringVar(output, "output", "table", "same as -o")
	fl.SetOutput(io.Discard)
	pos, err := parseFlags(fl, args, stdout)
	if err != nil {
		return fmt.Errorf("proxy-status: %w (usage: portico proxy-status [POD[.NAMESPACE]] [--controller ADDR] [--admin ADDR])", err)
	}
	if len(pos) > 1 {
		return fmt.Errorf("proxy-status: one proxy at most, got %q", pos)
	}
	src, err := kf.controllerSource(*controller)
	if err != nil {
		return err
	}
	ctx, cancel := commandContext()
	defer cancel()
	if len(pos) == 1 {
		if *admin != "" && *file != "" {
			return errors.New("proxy-status: --admin or -f, not both")
		}
		return proxyDiff(ctx, stdout, src, &kf, pos[0], *admin, *file, *adminPort)
	}
	if *admin != "" || *file != "" {
		return errors.New("proxy-status: --admin and -f need a PROXY to diff")
	}
	rows, err := proxyStatuses(ctx, src)
	if err != nil {
		return err
	}
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "yaml":
		return writeYAML(stdout, rows)
	case "table":
	default:
		return fmt.Errorf("proxy-status: -o %q: want table, json or yaml", *output)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 3, ' ', 0)
	header := "NAME\tCLASS\tCDS\tLDS\tEDS\tRDS\tSDS\tVERSION"
	if src.cluster != nil {
		header += "\tCONTROLLER" // istioctl's ISTIOD column
	}
	fmt.Fprintln(tw, header)
	for _, p := range rows {
		fmt.Fprintf(tw, "%s\t%s", proxyName(p.ProxyStatus), p.Class)
		for _, c := range typeColumns {
			st := p.Types[c.typ]
			if st == "" {
				st = xds.StatusNotSent
			}
			fmt.Fprintf(tw, "\t%s", st)
		}
		fmt.Fprintf(tw, "\t%s", p.Sent)
		if src.cluster != nil {
			fmt.Fprintf(tw, "\t%s", p.Controller)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// proxyStatuses merges what every controller reports, sorted by name.
// A controller that cannot be reached fails the command: a partial list
// would hide its proxies.
func proxyStatuses(ctx context.Context, src *controllerSource) ([]proxyStatusRow, error) {
	answers, err := src.getAll(ctx, "/debug/proxies")
	if err != nil {
		return nil, err
	}
	rows := []proxyStatusRow{}
	for _, a := range answers {
		if a.err != nil {
			return nil, a.err
		}
		var proxies []xds.ProxyStatus
		if err := json.Unmarshal(a.body, &proxies); err != nil {
			return nil, fmt.Errorf("decoding /debug/proxies: %w", err)
		}
		for _, p := range proxies {
			rows = append(rows, proxyStatusRow{ProxyStatus: p, Controller: a.pod})
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if a, b := proxyName(rows[i].ProxyStatus), proxyName(rows[j].ProxyStatus); a != b {
			return a < b
		}
		return rows[i].Controller < rows[j].Controller
	})
	return rows, nil
}

// proxyDiff is `proxy-status POD`: the controller's view of the proxy
// (/debug/config_dump?proxyID=) against the proxy's /config_dump, type by
// type, as istioctl prints it.
func proxyDiff(ctx context.Context, w io.Writer, src *controllerSource, kf *kubeFlags, arg, admin, file string, adminPort int) error {
	proxyID := arg
	var envoy []byte
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		envoy = b
	case admin != "":
		b, err := get(admin, "/config_dump?include_eds")
		if err != nil {
			return err
		}
		envoy = b
	default:
		c := src.cluster
		if c == nil {
			if !kf.available() {
				return errors.New("proxy-status: to diff a proxy, name its admin address (--admin HOST:PORT), a saved dump (-f) or reach a cluster (--kubeconfig)")
			}
			var err error
			if c, err = kf.connect(); err != nil {
				return err
			}
		}
		ns, name, err := c.resolvePod(ctx, arg)
		if err != nil {
			return err
		}
		if envoy, err = c.getVia(ctx, ns, name, adminPort, "/config_dump?include_eds"); err != nil {
			return err
		}
		proxyID = name + "." + ns
	}
	answers, err := src.getAll(ctx, "/debug/config_dump?include_eds&proxyID="+url.QueryEscape(proxyID))
	if err != nil {
		return err
	}
	// The proxy is connected to one controller; the others answer 404.
	var want []byte
	var errs []string
	for _, a := range answers {
		if a.err == nil {
			want = a.body
			break
		}
		errs = append(errs, a.err.Error())
	}
	if want == nil {
		return fmt.Errorf("proxy-status: no controller serves %s: %s", proxyID, strings.Join(errs, "; "))
	}
	return writeConfigDiff(w, want, envoy)
}
