package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/configdump"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
)

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// loadFiles decodes YAML/JSON files, directories (recursively: *.yaml,
// *.yml, *.json) and "-" (stdin) into one snapshot. Documents that cannot
// be read are returned as errors and also kept in the snapshot's Invalid
// list, as the file provider does, so analysis reports them.
func loadFiles(paths []string, stdin io.Reader) (*resource.Resources, []*resource.DecodeError, error) {
	res := &resource.Resources{}
	var bad []*resource.DecodeError
	add := func(data []byte, source string) error {
		objs, errs := resource.Decode(data, source)
		for _, o := range objs {
			if err := res.Add(o); err != nil {
				return fmt.Errorf("%s: %w", source, err)
			}
		}
		for _, e := range errs {
			bad = append(bad, e)
			res.Invalid = append(res.Invalid, resource.InvalidResource{Key: e.Key, Source: e.Source, Error: e.Error()})
		}
		return nil
	}
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, nil, fmt.Errorf("reading stdin: %w", err)
			}
			if err := add(data, "stdin"); err != nil {
				return nil, nil, err
			}
			continue
		}
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != p && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return nil
			}
			if path != p {
				switch filepath.Ext(path) {
				case ".yaml", ".yml", ".json":
				default:
					return nil
				}
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return add(data, path)
		})
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", p, err)
		}
	}
	res.Sort()
	return res, bad, nil
}

// parseLabels reads "k=v,k=v".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func runTranslate(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("translate", flag.ContinueOnError)
	var files fileList
	fl.Var(&files, "f", "file, directory or - (stdin); repeatable")
	to := fl.String("to", "xds", "ir | xds | status")
	class := fl.String("class", "", "only the proxy class with these labels (k=v,...); default every class the Gateways select")
	domain := fl.String("domain-suffix", "cluster.local", "the cluster's DNS domain")
	fl.SetOutput(io.Discard)
	rest, err := parseFlags(fl, args, stdout)
	if err != nil {
		return fmt.Errorf("translate: %w (usage: portico translate -f FILE... [--to ir|xds|status])", err)
	}
	files = append(files, rest...)
	if len(files) == 0 {
		return errors.New("translate: no input (-f FILE)")
	}
	res, _, err := loadFiles(files, os.Stdin)
	if err != nil {
		return err
	}
	opts := gateway.Options{DomainSuffix: *domain}
	var only map[string]string
	if *class != "" {
		if only, err = parseLabels(*class); err != nil {
			return err
		}
		opts.Classes = []map[string]string{only}
	}
	result := gateway.Build(res, opts)
	var proxies []*ir.Proxy
	for _, p := range result.Proxies {
		if only == nil || p.Name == gateway.ClassName(only) {
			proxies = append(proxies, p)
		}
	}
	switch *to {
	case "status":
		return writeYAML(stdout, map[string]any{"statuses": result.Statuses, "gatewayAPIStatuses": result.APIStatuses})
	case "ir":
		out := make([]*ir.Proxy, 0, len(proxies))
		for _, p := range proxies {
			out = append(out, p.Redacted())
		}
		return writeYAML(stdout, map[string]any{"proxies": out})
	case "xds":
		// One Envoy config dump per class: what `curl :15000/config_dump`
		// would show on a proxy of that class, readable by
		// `portico proxy-config -f` and by istioctl.
		for i, p := range proxies {
			tr, err := translate.Translate(p, translate.Options{})
			if err != nil {
				return fmt.Errorf("translating class %q: %w", p.Name, err)
			}
			b, err := configdump.Marshal(mustDump(tr))
			if err != nil {
				return err
			}
			if len(proxies) > 1 {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "# class %s\n", p.Name)
			}
			stdout.Write(b)
			fmt.Fprintln(stdout)
		}
		return nil
	}
	return fmt.Errorf("translate: --to %q: want ir, xds or status", *to)
}

func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// mustDump shapes translated resources as an Envoy config dump (with
// endpoints; private keys redacted by configdump).
func mustDump(tr *translate.Resources) *adminv3.ConfigDump {
	var in configdump.Input
	for _, r := range tr.Listeners {
		in.Listeners = append(in.Listeners, configdump.Entry{Name: r.Name, Resource: r})
	}
	for _, r := range tr.Routes {
		in.Routes = append(in.Routes, configdump.Entry{Name: r.Name, Resource: r})
	}
	for _, r := range tr.Clusters {
		in.Clusters = append(in.Clusters, configdump.Entry{Name: r.Name, Resource: r})
	}
	for _, r := range tr.Endpoints {
		in.Endpoints = append(in.Endpoints, configdump.Entry{Name: r.ClusterName, Resource: r})
	}
	for _, r := range tr.Secrets {
		in.Secrets = append(in.Secrets, configdump.Entry{Name: r.Name, Resource: r})
	}
	cd, err := configdump.Build(in, configdump.Query{IncludeEDS: true})
	if err != nil {
		panic(err) // only an unknown Query.Resource fails
	}
	return cd
}

func yamlUnmarshalJSON(js []byte, into any) error { return yaml.Unmarshal(js, into) }
