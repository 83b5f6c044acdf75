// Command portico is Portico's command-line tool, shaped after istioctl so
// that what users know carries over:
//
//	portico translate -f FILE... [--to ir|xds|status]   offline: the binder and translator as a pure function
//	portico analyze [FILE...] [-A]                      Istio's analysis codes and levels; exit 79 on errors
//	portico proxy-config KIND (POD | -f DUMP | --admin ADDR)  istioctl's tables from a config dump
//	portico proxy-status [POD]                          is every proxy in sync? POD: the diff
//	portico version                                     client, controller and proxies
//	portico completion bash|zsh|fish
//
// Every command works against a cluster as istioctl does (--kubeconfig,
// --context, -n; pods reached by port-forwards through the API server),
// a standalone process (--admin, --controller addresses), or files. The
// standard library's flag package is enough for these subcommands and
// keeps the binary's dependencies those of the controller.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// exitIssues is istioctl analyze's exit code when it finds errors.
const exitIssues = 79

// errIssues makes main exit with exitIssues.
var errIssues = errors.New("analysis found errors")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type command struct {
	name, usage string
	run         func(args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"translate", "translate -f FILE... [--to ir|xds|status] [--class k=v,...]", runTranslate},
		{"analyze", "analyze [FILE...] [-A] [-n NS] [--use-kube=true] [--proxy k=v,...] [--controller ADDR] [-o text|yaml|json]", runAnalyze},
		{"proxy-config", "proxy-config listeners|routes|clusters|endpoints|secrets|bootstrap|all (POD[.NS] | deployment/NAME[.NS] | -f DUMP.json | --admin ADDR) [--name N] [--port P] [-o table|json|yaml]", runProxyConfig},
		{"proxy-status", "proxy-status [POD[.NS]] [--controller ADDR] [--admin ADDR | -f DUMP.json] [-o table|json|yaml]", runProxyStatus},
		{"version", "version [--controller ADDR | --admin ADDR] [--remote=false] [-o json|yaml]", runVersion},
		{"completion", "completion bash|zsh|fish", runCompletion},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	if args[0] == "__complete" { // the shell completion scripts' helper
		runComplete(args[1:], stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] || c.name == "proxy-config" && args[0] == "pc" || c.name == "proxy-status" && args[0] == "ps" {
			err := c.run(args[1:], stdout)
			switch {
			case err == nil, errors.Is(err, errHelped):
				return 0
			case errors.Is(err, errIssues):
				return exitIssues
			default:
				fmt.Fprintf(stderr, "Error: %v\n", err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "Error: unknown command %q\n", args[0])
	usage(stderr)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Portico's command-line tool (istioctl's commands, for Portico gateways).\n\nUsage:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  portico %s\n", c.usage)
	}
	fmt.Fprintln(w, "\nCluster flags (every command that reads a cluster): --kubeconfig FILE --context NAME -n NAMESPACE\n"+
		"  --portico-namespace NS (the controller's, default portico-system) --controller-selector SEL (default app=portico-controller).\n"+
		"POD arguments are reached through the API server (a port-forward to the admin port 15000; the controller's debug port 15014).")
}
