package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/pmezard/go-difflib/difflib"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// diffSections are the types proxy-status POD compares, istioctl's three
// first (in its order), then endpoints and secrets, which Portico's
// controller also sends.
var diffSections = []struct {
	title string
	list  func(*dump) []named
}{
	{"Clusters", func(d *dump) []named { return namedOf(d.clusters) }},
	{"Listeners", func(d *dump) []named { return namedOf(d.listeners) }},
	{"Routes", func(d *dump) []named { return namedOf(d.routes) }},
	{"Endpoints", func(d *dump) []named { return namedOf(withoutLiveState(d.endpoints)) }},
	{"Secrets", func(d *dump) []named { return namedOf(d.secrets) }},
}

// withoutLiveState drops from endpoints what a proxy's EDS dump adds as
// it runs, as Envoy's does: each endpoint's health as outlier detection
// sees it, and the weight it balances with (1 when none was sent).
// What remains is what was sent.
func withoutLiveState(list []*endpointv3.ClusterLoadAssignment) []*endpointv3.ClusterLoadAssignment {
	out := make([]*endpointv3.ClusterLoadAssignment, 0, len(list))
	for _, cla := range list {
		cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
		for _, le := range cla.Endpoints {
			for _, e := range le.LbEndpoints {
				e.HealthStatus = corev3.HealthStatus_UNKNOWN
				if e.LoadBalancingWeight.GetValue() == 0 {
					e.LoadBalancingWeight = wrapperspb.UInt32(1)
				}
			}
		}
		out = append(out, cla)
	}
	return out
}

type named struct {
	name string
	msg  proto.Message
}

func namedOf[T proto.Message](list []T) []named {
	out := make([]named, 0, len(list))
	for _, m := range list {
		out = append(out, named{nameOf(m), m})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// nameOf reads a resource's name (cluster_name for endpoints).
func nameOf(m proto.Message) string {
	switch v := m.(type) {
	case interface{ GetClusterName() string }:
		return v.GetClusterName()
	case interface{ GetName() string }:
		return v.GetName()
	}
	return ""
}

// canonicalJSON prints resources one way, whatever produced them:
// Envoy's field names, indented, in name order. Versions and load times
// are not part of it (they are not configuration), as in istioctl.
func canonicalJSON(list []named) (string, error) {
	var buf bytes.Buffer
	buf.WriteString("[\n")
	for i, n := range list {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(n.msg)
		if err != nil {
			return "", fmt.Errorf("printing %s: %w", n.name, err)
		}
		var ind bytes.Buffer
		if err := json.Indent(&ind, b, "    ", "    "); err != nil {
			return "", err
		}
		buf.WriteString("    ")
		buf.Write(ind.Bytes())
		if i < len(list)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("]\n")
	return buf.String(), nil
}

// writeConfigDiff prints, per type, "Clusters Match" or "Clusters Don't
// Match" and a unified diff from the controller's view (want) to the
// proxy's dump (have), as istioctl proxy-status POD does; the route line
// says when the proxy last loaded routes.
func writeConfigDiff(w io.Writer, want, have []byte) error {
	wd, err := parseDump(want)
	if err != nil {
		return fmt.Errorf("the controller's view: %w", err)
	}
	hd, err := parseDump(have)
	if err != nil {
		return fmt.Errorf("the proxy's dump: %w", err)
	}
	for _, sec := range diffSections {
		a, err := canonicalJSON(sec.list(wd))
		if err != nil {
			return err
		}
		b, err := canonicalJSON(sec.list(hd))
		if err != nil {
			return err
		}
		text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(a), FromFile: "Controller " + sec.title,
			B: difflib.SplitLines(b), ToFile: "Proxy " + sec.title,
			Context: 7,
		})
		if err != nil {
			return err
		}
		suffix := ""
		if sec.title == "Routes" && !hd.routesUpdated.IsZero() {
			suffix = fmt.Sprintf(" (RDS last loaded at %s)", hd.routesUpdated.UTC().Format(time.RFC1123))
		}
		if text == "" {
			fmt.Fprintf(w, "%s Match%s\n", sec.title, suffix)
			continue
		}
		fmt.Fprintf(w, "%s Don't Match%s\n%s\n", sec.title, suffix, text)
	}
	return nil
}
