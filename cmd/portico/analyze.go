package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// finding is one line of istioctl analyze's output.
type finding struct {
	Code     string `json:"code"`
	Level    string `json:"level"`
	Origin   string `json:"origin"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
	Analyzer string `json:"documentationUrl,omitempty"`
}

func runAnalyze(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("analyze", flag.ContinueOnError)
	controller := fl.String("controller", "", "analyze what a running controller built: its debug address (host:port), e.g. through kubectl port-forward")
	output := fl.String("o", "text", "text | yaml | json")
	fl.StringVar(output, "output", "text", "same as -o")
	all := fl.Bool("A", false, "report every namespace (default: only -n's, or the context's, as istioctl; offline files: always every namespace)")
	fl.BoolVar(all, "all-namespaces", false, "same as -A")
	useKube := fl.String("use-kube", "", "read the cluster's objects (true|false; default: true without files, false with files; with files, they replace the cluster's objects of the same name)")
	var proxies proxyLabels
	fl.Var(&proxies, "proxy", "the labels of a gateway proxy that exists (k=v,k=v; repeatable): Gateways whose selector matches none are reported (IST0101), as istioctl does for a selector matching no Pod")
	threshold := fl.String("failure-threshold", "Error", "the lowest level that makes the exit code 79: Info, Warning or Error")
	var kf kubeFlags
	kf.register(fl)
	fl.SetOutput(io.Discard)
	files, err := parseFlags(fl, args, stdout)
	if err != nil {
		return fmt.Errorf("analyze: %w (usage: portico analyze [FILE...] [-A] [--controller ADDR])", err)
	}
	if levelRank(*threshold) == 0 {
		return fmt.Errorf("analyze: --failure-threshold %q: want Info, Warning or Error", *threshold)
	}
	kube := len(files) == 0
	switch *useKube {
	case "":
	case "true":
		kube = true
	case "false":
		kube = false
	default:
		return fmt.Errorf("analyze: --use-kube %q: want true or false", *useKube)
	}
	var statuses []*status.Status
	scope := "" // the namespace reported on; "" for all
	switch {
	case *controller != "" && len(files) > 0:
		return fmt.Errorf("analyze: files or --controller, not both")
	case *controller != "":
		var doc struct {
			Statuses []*status.Status `json:"statuses"`
		}
		if err := getYAML(*controller, "/debug/status", &doc); err != nil {
			return err
		}
		statuses = doc.Statuses
	case kube:
		c, err := kf.connect()
		if err != nil {
			return fmt.Errorf("analyze: no files, and no cluster: %w", err)
		}
		ctx, cancel := commandContext()
		defer cancel()
		res, pods, err := c.clusterResources(ctx)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			local, _, err := loadFiles(files, os.Stdin)
			if err != nil {
				return err
			}
			res = overlay(res, local)
		}
		classes := append(pods, proxies...)
		statuses = gateway.Build(res, gateway.Options{Classes: classes, ProxiesKnown: true}).Statuses
		if !*all {
			scope = c.namespace
		}
	default:
		res, _, err := loadFiles(files, os.Stdin)
		if err != nil {
			return err
		}
		statuses = gateway.Build(res, gateway.Options{Classes: proxies, ProxiesKnown: len(proxies) > 0}).Statuses
	}
	if scope != "" {
		var keep []*status.Status
		for _, st := range statuses {
			if st.Key.Namespace == scope {
				keep = append(keep, st)
			}
		}
		statuses = keep
	}
	var out []finding
	worst := 0
	for _, st := range statuses {
		for _, m := range st.Messages {
			out = append(out, finding{Code: m.Code.ID, Level: string(m.Level), Origin: origin(st), Field: m.Field, Message: m.Message})
			worst = max(worst, levelRank(string(m.Level)))
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := levelRank(out[i].Level), levelRank(out[j].Level); a != b {
			return a > b
		}
		return out[i].Origin < out[j].Origin
	})
	switch *output {
	case "yaml":
		if err := writeYAML(stdout, out); err != nil {
			return err
		}
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	case "text":
		if len(out) == 0 {
			if scope != "" {
				fmt.Fprintf(stdout, "✔ No validation issues found when analyzing namespace: %s.\n", scope)
			} else {
				fmt.Fprintln(stdout, "✔ No validation issues found when analyzing all namespaces.")
			}
		}
		for _, f := range out {
			// istioctl: Error [IST0101] (VirtualService default/reviews) message
			msg := f.Message
			if f.Field != "" {
				msg = f.Field + ": " + msg
			}
			fmt.Fprintf(stdout, "%s [%s] (%s) %s\n", f.Level, f.Code, f.Origin, msg)
		}
	default:
		return fmt.Errorf("analyze: -o %q: want text, yaml or json", *output)
	}
	if worst >= levelRank(*threshold) {
		return errIssues
	}
	return nil
}

// overlay replaces the cluster's objects with the files' of the same
// kind, namespace and name and adds the others, as istioctl analyze
// applies local files over the cluster.
func overlay(cluster, local *resource.Resources) *resource.Resources {
	replaced := map[resource.Key]bool{}
	for _, o := range local.All() {
		replaced[resource.KeyOf(o)] = true
	}
	out := &resource.Resources{Invalid: append(append([]resource.InvalidResource(nil), cluster.Invalid...), local.Invalid...)}
	for _, o := range cluster.All() {
		if !replaced[resource.KeyOf(o)] {
			out.Add(o)
		}
	}
	for _, o := range local.All() {
		out.Add(o)
	}
	out.Sort()
	return out
}

// proxyLabels is the repeatable --proxy flag.
type proxyLabels []map[string]string

func (p *proxyLabels) String() string { return fmt.Sprint(*p) }

func (p *proxyLabels) Set(v string) error {
	labels := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return fmt.Errorf("--proxy %q: want k=v[,k=v...]", v)
		}
		labels[k] = val
	}
	*p = append(*p, labels)
	return nil
}

// origin names a resource as istioctl does: "Kind namespace/name".
func origin(st *status.Status) string {
	k := st.Key
	kind := k.Kind
	if k.Group != "" {
		kind += "." + k.Group
	}
	if k.Namespace == "" {
		return kind + " " + k.Name
	}
	return kind + " " + k.Namespace + "/" + k.Name
}

func levelRank(l string) int {
	switch strings.ToLower(l) {
	case "info":
		return 1
	case "warning":
		return 2
	case "error":
		return 3
	}
	return 0
}

// get fetches path from a debug or admin address, bounded in time.
func get(addr, path string) ([]byte, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(strings.TrimSuffix(addr, "/") + path)
	if err != nil {
		return nil, fmt.Errorf("reaching %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s: %s", addr, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func getYAML(addr, path string, into any) error {
	b, err := get(addr, path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		return fmt.Errorf("decoding %s%s: %w", addr, path, err)
	}
	return nil
}
