package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"

	"github.com/portico-gateway/portico/pkg/version"
)

// versionReport is `portico version -o json`.
type versionReport struct {
	Client      string              `json:"clientVersion"`
	Controllers []componentVersion  `json:"controllerVersions,omitempty"`
	Proxies     map[string][]string `json:"dataPlaneVersions,omitempty"` // version → proxies
}

type componentVersion struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

func runVersion(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("version", flag.ContinueOnError)
	var kf kubeFlags
	controller := controllerFlags(fl, &kf)
	admin := fl.String("admin", "", "a standalone proxy's admin address (host:port): report its version (without a controller)")
	remote := fl.Bool("remote", true, "also report the controller's and the proxies' versions (istioctl's --remote)")
	short := fl.Bool("short", false, "versions only")
	output := fl.String("o", "", "json | yaml (default: text)")
	fl.StringVar(output, "output", "", "same as -o")
	fl.SetOutput(io.Discard)
	if _, err := parseFlags(fl, args, stdout); err != nil {
		return fmt.Errorf("version: %w", err)
	}
	rep := versionReport{Client: version.Version}
	var remoteErr error
	switch {
	case *remote && *admin != "":
		remoteErr = proxyVersion(*admin, &rep)
	case *remote:
		remoteErr = remoteVersions(&kf, *controller, &rep)
	}
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	case "yaml":
		if err := writeYAML(stdout, rep); err != nil {
			return err
		}
	case "":
		fmt.Fprintf(stdout, "client version: %s\n", rep.Client)
		if remoteErr != nil {
			break
		}
		for _, c := range rep.Controllers {
			if *short {
				fmt.Fprintf(stdout, "control plane version: %s\n", c.Version)
			} else {
				fmt.Fprintf(stdout, "control plane version: %s (%s)\n", c.Version, c.Name)
			}
		}
		for _, v := range sortedKeys(rep.Proxies) {
			fmt.Fprintf(stdout, "data plane version: %s (%d proxies)\n", v, len(rep.Proxies[v]))
		}
		if rep.Proxies != nil && len(rep.Proxies) == 0 {
			fmt.Fprintln(stdout, "data plane version: none (no proxy connected)")
		}
	default:
		return fmt.Errorf("version: -o %q: want json or yaml", *output)
	}
	if remoteErr != nil {
		return fmt.Errorf("version: the control plane or proxy: %w", remoteErr)
	}
	return nil
}

// proxyVersion reads one proxy's build version from its bootstrap, as
// istioctl proxy-config all prints it.
func proxyVersion(admin string, rep *versionReport) error {
	b, err := get(admin, "/config_dump")
	if err != nil {
		return err
	}
	d, err := parseDump(b)
	if err != nil {
		return err
	}
	v := d.envoyVersion()
	if v == "" {
		v = "unknown"
	}
	rep.Proxies = map[string][]string{v: {admin}}
	return nil
}

// remoteVersions asks each controller for its version (/version) and for
// its connected proxies' (from the build version they report on their
// node), as istioctl version reports istiod and the data plane.
func remoteVersions(kf *kubeFlags, controller string, rep *versionReport) error {
	src, err := kf.controllerSource(controller)
	if err != nil {
		return err
	}
	ctx, cancel := commandContext()
	defer cancel()
	answers, err := src.getAll(ctx, "/version")
	if err != nil {
		return err
	}
	for _, a := range answers {
		if a.err != nil {
			return a.err
		}
		var v struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(a.body, &v); err != nil {
			return fmt.Errorf("decoding /version: %w", err)
		}
		name := a.pod
		if name == "" {
			name = src.addr
		}
		rep.Controllers = append(rep.Controllers, componentVersion{Name: name, Version: v.Version})
	}
	rows, err := proxyStatuses(ctx, src)
	if err != nil {
		return err
	}
	rep.Proxies = map[string][]string{}
	for _, r := range rows {
		v := r.Version
		if v == "" {
			v = "unknown"
		}
		rep.Proxies[v] = append(rep.Proxies[v], proxyName(r.ProxyStatus))
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
