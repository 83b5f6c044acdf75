package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// envoyVersion is what istioctl prints as "Envoy Version": the node's
// user_agent_build_version (empty when the dump has no bootstrap).
func (d *dump) envoyVersion() string {
	v := d.bootstrap.GetBootstrap().GetNode().GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch())
}

// writeBootstrap prints `proxy-config bootstrap`: istioctl's json and
// yaml (the whole BootstrapConfigDump) and short (its version summary),
// and a table of what a user debugging a gateway looks for first: who the
// proxy says it is and where it gets its configuration.
func writeBootstrap(w io.Writer, d *dump, format string) error {
	if d.bootstrap.GetBootstrap() == nil {
		return errors.New("proxy-config bootstrap: the dump has no bootstrap (a translated dump has none; read a proxy's)")
	}
	switch format {
	case "json", "yaml":
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(d.bootstrap)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "    "); err != nil {
			return err
		}
		if format == "json" {
			_, err := fmt.Fprintln(w, buf.String())
			return err
		}
		var v any
		if err := yamlUnmarshalJSON(buf.Bytes(), &v); err != nil {
			return err
		}
		return writeYAML(w, v)
	case "short":
		tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
		if v := d.envoyVersion(); v != "" {
			fmt.Fprintf(tw, "Envoy Version:\t%s\n", v)
		}
		return tw.Flush()
	case "table":
	default:
		return fmt.Errorf("proxy-config bootstrap: -o %q: want table, short, json or yaml", format)
	}
	b := d.bootstrap.GetBootstrap()
	node := b.GetNode()
	md := node.GetMetadata().GetFields()
	var labels []string
	for k, v := range md["LABELS"].GetStructValue().GetFields() {
		labels = append(labels, k+"="+v.GetStringValue())
	}
	sort.Strings(labels)
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Node ID", node.GetId())
	row("Cluster", node.GetCluster())
	row("Namespace", md["NAMESPACE"].GetStringValue())
	row("Labels", strings.Join(labels, ","))
	row("User Agent", node.GetUserAgentName())
	row("Envoy Version", d.envoyVersion())
	if ads := b.GetDynamicResources().GetAdsConfig(); ads != nil {
		var targets []string
		for _, g := range ads.GetGrpcServices() {
			if c := g.GetEnvoyGrpc().GetClusterName(); c != "" {
				targets = append(targets, c)
			}
		}
		row("xDS", fmt.Sprintf("%s via %s", ads.GetApiType(), strings.Join(targets, ",")))
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		var addrs []string
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				addrs = append(addrs, socketString(e.GetEndpoint().GetAddress()))
			}
		}
		row("Static Cluster "+c.GetName(), strings.Join(addrs, ","))
	}
	if a := b.GetAdmin().GetAddress(); a != nil {
		row("Admin", socketString(a))
	}
	if t := d.bootstrap.GetLastUpdated(); t != nil {
		row("Last Updated", t.AsTime().UTC().Format("2006-01-02T15:04:05Z"))
	}
	return tw.Flush()
}

func socketString(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
}
