// Command portico is Portico's command-line tool, shaped after istioctl so
// that what users know carries over:
//
//	portico translate -f FILE... [--to ir|xds|status]   offline: the binder and translator as a pure function
//	portico analyze [FILE...] [--proxy k=v] [--controller ADDR]  Istio's analysis codes and levels; exit 79 on errors
//	portico proxy-config KIND (-f DUMP | --admin ADDR)  istioctl's tables from a config dump
//	portico proxy-status --controller ADDR [PROXY]      is every proxy in sync with the controller?
//	portico version [--controller ADDR]
//
// Live sources are addresses (the proxy's admin port, the controller's
// debug port: both on localhost by default), reached directly or through
// `kubectl port-forward`; files are what `curl localhost:15000/config_dump`
// saved. The standard library's flag package is enough for five
// subcommands and keeps the binary's dependencies those of the controller.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "0.1.0"

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
		{"analyze", "analyze [FILE...] [--proxy k=v,...] [--controller ADDR] [-o text|yaml|json]", runAnalyze},
		{"proxy-config", "proxy-config listeners|routes|clusters|endpoints|secrets|all (-f DUMP.json | --admin ADDR) [--name N] [--port P] [-o table|json|yaml]", runProxyConfig},
		{"proxy-status", "proxy-status --controller ADDR [PROXY]", runProxyStatus},
		{"version", "version [--controller ADDR]", runVersion},
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] || c.name == "proxy-config" && args[0] == "pc" || c.name == "proxy-status" && args[0] == "ps" {
			err := c.run(args[1:], stdout)
			switch {
			case err == nil:
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
}
