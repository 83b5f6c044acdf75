package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Shell completion works as cobra's does: the shell's script hands the
// words typed so far to the hidden `portico __complete` command, which
// answers with candidates, one per line — commands, proxy-config kinds,
// flags, output formats, namespaces and pods (read from the cluster of
// the --kubeconfig/--context typed so far, bounded to a few seconds).

// commandFlags lists every command's flags, for completion (a test
// checks that each is defined by its command).
var commandFlags = map[string][]string{
	"translate":    {"-f", "--to", "--class", "--domain-suffix"},
	"analyze":      {"-A", "--all-namespaces", "-o", "--output", "--use-kube", "--proxy", "--failure-threshold", "--controller", "--kubeconfig", "--context", "-n", "--namespace", "--portico-namespace", "--controller-selector"},
	"proxy-config": {"-f", "--file", "--admin", "--proxy-admin-port", "--name", "--port", "-o", "--output", "--kubeconfig", "--context", "-n", "--namespace", "--portico-namespace", "--controller-selector"},
	"proxy-status": {"--controller", "--admin", "-f", "--file", "--proxy-admin-port", "-o", "--output", "--kubeconfig", "--context", "-n", "--namespace", "--portico-namespace", "--controller-selector"},
	"version":      {"--admin", "--remote", "--short", "-o", "--output", "--controller", "--kubeconfig", "--context", "-n", "--namespace", "--portico-namespace", "--controller-selector"},
	"completion":   {},
}

var aliases = map[string]string{"pc": "proxy-config", "ps": "proxy-status"}

// flagValues are the fixed values of flags that have them.
var flagValues = map[string][]string{
	"-o": {"table", "json", "yaml", "short", "text"}, "--output": {"table", "json", "yaml", "short", "text"},
	"--to": {"ir", "xds", "status"}, "--failure-threshold": {"Info", "Warning", "Error"}, "--use-kube": {"true", "false"},
}

// podLister lists pod names for completion; tests replace it.
type podLister func(kf *kubeFlags, allNamespaces bool) ([]string, error)

func clusterPods(kf *kubeFlags, allNamespaces bool) ([]string, error) {
	c, err := kf.connect()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ns := c.namespace
	if allNamespaces {
		ns = ""
	}
	list, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range list.Items {
		if allNamespaces {
			out = append(out, p.Name+"."+p.Namespace)
		} else {
			out = append(out, p.Name)
		}
	}
	return out, nil
}

func clusterNamespaces(kf *kubeFlags) ([]string, error) {
	c, err := kf.connect()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range list.Items {
		out = append(out, n.Name)
	}
	return out, nil
}

// complete answers `portico __complete WORD... CURRENT`.
func complete(words []string, w io.Writer, pods podLister, namespaces func(*kubeFlags) ([]string, error)) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	var cands []string
	defer func() {
		sort.Strings(cands)
		for _, c := range cands {
			if strings.HasPrefix(c, cur) {
				fmt.Fprintln(w, c)
			}
		}
	}()
	if len(words) == 1 {
		for name := range commandFlags {
			cands = append(cands, name)
		}
		cands = append(cands, "help")
		return
	}
	cmd := words[0]
	if a, ok := aliases[cmd]; ok {
		cmd = a
	}
	flags, ok := commandFlags[cmd]
	if !ok {
		return
	}
	// The cluster flags typed so far, for pods and namespaces.
	var kf kubeFlags
	fl := flag.NewFlagSet("complete", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	kf.register(fl)
	var positional []string
	prev := ""
	for _, word := range words[1 : len(words)-1] {
		switch {
		case strings.HasPrefix(word, "-"):
			name, val, hasVal := strings.Cut(strings.TrimLeft(word, "-"), "=")
			if fl.Lookup(name) != nil && hasVal {
				fl.Set(name, val)
			}
		case strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") && !boolFlag(prev):
			if name := strings.TrimLeft(prev, "-"); fl.Lookup(name) != nil {
				fl.Set(name, word)
			}
		default:
			positional = append(positional, word)
		}
		prev = word
	}
	switch {
	case strings.HasPrefix(cur, "-"):
		cands = flags
		return
	case prev == "-n" || prev == "--namespace":
		if namespaces != nil {
			cands, _ = namespaces(&kf)
		}
		return
	case flagValues[prev] != nil:
		cands = flagValues[prev]
		return
	case strings.HasPrefix(prev, "-") && !boolFlag(prev) && !strings.Contains(prev, "="):
		return // a flag's free-form value
	}
	switch cmd {
	case "completion":
		if len(positional) == 0 {
			cands = []string{"bash", "zsh", "fish"}
		}
	case "proxy-config":
		switch len(positional) {
		case 0:
			cands = proxyConfigKinds
		case 1:
			if pods != nil {
				cands, _ = pods(&kf, kf.namespace == "" && strings.Contains(cur, "."))
			}
		}
	case "proxy-status":
		if len(positional) == 0 && pods != nil {
			cands, _ = pods(&kf, kf.namespace == "" && strings.Contains(cur, "."))
		}
	}
}

func boolFlag(f string) bool {
	switch f {
	case "-A", "--all-namespaces", "--remote", "--short":
		return true
	}
	return false
}

func runComplete(args []string, stdout io.Writer) error {
	complete(args, stdout, clusterPods, clusterNamespaces)
	return nil
}

func runCompletion(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("completion: which shell? bash, zsh or fish")
	}
	script, ok := completionScripts[args[0]]
	if !ok {
		return fmt.Errorf("completion: %q: want bash, zsh or fish", args[0])
	}
	_, err := io.WriteString(stdout, script)
	return err
}

var completionScripts = map[string]string{
	"bash": `# portico bash completion: source <(portico completion bash)
_portico() {
    local IFS=$'\n'
    COMPREPLY=($(portico __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _portico portico
`,
	"zsh": `#compdef portico
# portico zsh completion: source <(portico completion zsh)
_portico() {
    local -a cands
    cands=("${(@f)$(portico __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    compadd -- "${cands[@]}"
}
compdef _portico portico
`,
	"fish": `# portico fish completion: portico completion fish | source
function __portico_complete
    set -l words (commandline -opc) (commandline -ct)
    portico __complete $words[2..-1] 2>/dev/null
end
complete -c portico -f -a '(__portico_complete)'
`,
}
