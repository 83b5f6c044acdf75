package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/portico-gateway/portico/pkg/xds"
)

// typeColumns are istioctl proxy-status's columns, in its order, with the
// short type names the controller reports.
var typeColumns = []struct{ column, typ string }{
	{"CDS", "Cluster"}, {"LDS", "Listener"}, {"EDS", "ClusterLoadAssignment"}, {"RDS", "RouteConfiguration"}, {"SDS", "Secret"},
}

func runProxyStatus(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("proxy-status", flag.ContinueOnError)
	controller := fl.String("controller", "127.0.0.1:15014", "the controller's debug address (host:port)")
	output := fl.String("o", "table", "table | json")
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		return fmt.Errorf("proxy-status: %w (usage: portico proxy-status --controller ADDR [PROXY])", err)
	}
	b, err := get(*controller, "/debug/proxies")
	if err != nil {
		return err
	}
	var proxies []xds.ProxyStatus
	if err := json.Unmarshal(b, &proxies); err != nil {
		return fmt.Errorf("decoding /debug/proxies: %w", err)
	}
	if name := fl.Arg(0); name != "" {
		var keep []xds.ProxyStatus
		for _, p := range proxies {
			if p.ID == name {
				keep = append(keep, p)
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("proxy-status: no connected proxy %q", name)
		}
		proxies = keep
	}
	sort.Slice(proxies, func(i, j int) bool { return proxies[i].ID < proxies[j].ID })
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(proxies)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLASS\tCDS\tLDS\tEDS\tRDS\tSDS\tVERSION")
	for _, p := range proxies {
		fmt.Fprintf(tw, "%s\t%s", p.ID, p.Class)
		for _, c := range typeColumns {
			st := p.Types[c.typ]
			if st == "" {
				st = "NOT SENT"
			}
			fmt.Fprintf(tw, "\t%s", st)
		}
		fmt.Fprintf(tw, "\t%s\n", p.Sent)
	}
	return tw.Flush()
}

func runVersion(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("version", flag.ContinueOnError)
	controller := fl.String("controller", "", "also ask a controller (its debug address) which proxies run which version")
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	fmt.Fprintf(stdout, "client version: %s\n", version)
	if *controller == "" {
		return nil
	}
	b, err := get(*controller, "/debug/proxies")
	if err != nil {
		return err
	}
	var proxies []xds.ProxyStatus
	if err := json.Unmarshal(b, &proxies); err != nil {
		return fmt.Errorf("decoding /debug/proxies: %w", err)
	}
	fmt.Fprintf(stdout, "control plane: reachable at %s, %d proxies connected\n", *controller, len(proxies))
	return nil
}
