// Command controlplane measures Portico's control plane:
//
//   - pipeline: provider → snapshot published for N = 100 … 10,000
//     VirtualServices, with the peak RSS of a process doing only that;
//   - memory: RSS after creating and then deleting 5,000 VirtualServices;
//   - propagation: with a controller and an edge proxy running, how long
//     from changing one VirtualService until the proxy serves it (polled
//     through the data plane every millisecond), at 100 and 3,000 routes,
//     idle and under background load, in standalone mode and against a
//     real API server.
//
// Run it from the repository root (make bench does).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/internal/scale"
)

var verbose *bool

type bench struct {
	work, bins     string
	profileDir     string
	backendPort    int
	controllerArgs []string
	proxyArgs      []string
}

func main() {
	child := flag.String("child", "", "internal: run one measurement (pipeline, memory) and print JSON")
	dir := flag.String("dir", "", "internal: the configuration directory of a child")
	n := flag.Int("n", 0, "internal: VirtualServices of a child")
	sizes := flag.String("sizes", "100,1000,5000,10000", "VirtualServices for the pipeline measurement")
	memoryN := flag.Int("memory", 5000, "VirtualServices created and deleted for the memory measurement (0 skips)")
	routes := flag.String("routes", "100,3000", "route counts for the propagation measurement")
	modes := flag.String("modes", "standalone,kubernetes", "propagation modes: standalone, standalone-one-port (every VirtualService on one Gateway port, changed through a dot-temp file), kubernetes, kubernetes-one-port")
	changes := flag.Int("changes", 50, "changes per propagation measurement")
	controllerArgs := flag.String("controller-args", "", "extra gateway-controller flags (comma-separated), e.g. --debounce-after=10ms")
	proxyArgs := flag.String("proxy-args", "", "extra edge-proxy flags (comma-separated)")
	out := flag.String("out", "", "also write the Markdown report here")
	binDir := flag.String("bin-dir", "", "use Portico binaries from this directory instead of building them")
	verbose = flag.Bool("v", false, "print every propagation sample")
	keep := flag.Bool("keep", false, "keep the scratch directory (configurations and logs)")
	profiles := flag.String("profiles", "", "save 5 s CPU profiles of the proxy and controller during each propagation measurement in this directory")
	flag.Parse()

	if *child != "" {
		if err := runChild(*child, *dir, *n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "portico-cp-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "keeping", work)
	} else {
		defer os.RemoveAll(work)
	}
	b := &bench{work: work, bins: *binDir, profileDir: *profiles}
	if *controllerArgs != "" {
		b.controllerArgs = strings.Split(*controllerArgs, ",")
	}
	if *proxyArgs != "" {
		b.proxyArgs = strings.Split(*proxyArgs, ",")
	}
	report, err := b.run(ctx, ints(*sizes), *memoryN, ints(*routes), strings.Split(*modes, ","), *changes)
	fmt.Print(report)
	if *out != "" && report != "" {
		os.WriteFile(*out, []byte(report), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, v)
		}
	}
	return out
}

func (b *bench) run(ctx context.Context, sizes []int, memoryN int, routes []int, modes []string, changes int) (string, error) {
	var r strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&r, "Control plane, %s on %s (%d CPUs).\n\n", time.Now().UTC().Format("2006-01-02"), host, numCPU())

	if len(sizes) > 0 {
		fmt.Fprintln(&r, "| VirtualServices | routes | objects | provider start → published | CPU until then | last build (bind+translate+publish) | peak RSS | RSS after GC (live heap) |")
		fmt.Fprintln(&r, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, n := range sizes {
			dir := filepath.Join(b.work, fmt.Sprintf("pipeline-%d", n))
			if err := writeConfig(dir, scale.Options{VirtualServices: n}, 0); err != nil {
				return r.String(), err
			}
			res, err := b.child(ctx, "pipeline", dir, n)
			if err != nil {
				return r.String(), err
			}
			os.RemoveAll(dir)
			fmt.Fprintf(os.Stderr, "pipeline %d: %+v\n", n, res)
			fmt.Fprintf(&r, "| %d | %d | %d | %s | %s | %s | %.0f MiB | %.0f MiB (%.0f MiB) |\n", n, res.Routes, res.Objects, secs(res.FirstPublish), secs(res.CPU), secs(res.Build),
				res.PeakRSSMiB, res.SteadyMiB, res.SteadyHeapMiB)
		}
		fmt.Fprintln(&r)
	}
	if memoryN > 0 {
		dir := filepath.Join(b.work, "memory")
		// The Gateways the services will bind to, without the services.
		shared := memoryOptions(memoryN)
		shared.VirtualServices = 0
		if err := writeConfig(dir, shared, 0); err != nil {
			return r.String(), err
		}
		res, err := b.child(ctx, "memory", dir, memoryN)
		if err != nil {
			return r.String(), err
		}
		fmt.Fprintf(os.Stderr, "memory: %+v\n", res)
		fmt.Fprintf(&r, "| Memory after a forced GC | before | with %d VirtualServices | after deleting them | again: created, deleted | peak |\n", memoryN)
		fmt.Fprintln(&r, "| --- | ---: | ---: | ---: | ---: | ---: |")
		fmt.Fprintf(&r, "| RSS | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB |\n", res.BaselineMiB, res.LoadedMiB, res.FirstReleasedMiB, res.ReleasedMiB, res.PeakRSSMiB)
		fmt.Fprintf(&r, "| Go heap (live objects) | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | |\n\n", res.BaselineHeapMiB, res.LoadedHeapMiB, res.FirstReleasedHeapMiB, res.ReleasedHeapMiB)
	}
	if len(routes) == 0 || len(modes) == 0 {
		return r.String(), nil
	}
	if b.bins == "" {
		b.bins = filepath.Join(b.work, "bin")
		build := exec.Command("go", "build", "-o", b.bins+"/", "./cmd/gateway-controller", "./cmd/edge-proxy")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return r.String(), fmt.Errorf("building (run from the repository root): %w", err)
		}
	}
	var err error
	if b.backendPort, err = startBackend(ctx); err != nil {
		return r.String(), err
	}
	fmt.Fprintf(&r, "| Propagation (change one VirtualService → proxy serves it) | routes | load | changes | p50 | p99 | max |\n")
	fmt.Fprintln(&r, "| --- | ---: | --- | ---: | ---: | ---: | ---: |")
	for _, mode := range modes {
		for _, n := range routes {
			var s *system
			cleanup := func() {}
			switch mode {
			case "standalone":
				s, err = b.standalone(n, false)
			case "standalone-one-port":
				s, err = b.standalone(n, true)
			case "kubernetes":
				s, cleanup, err = b.kubernetes(ctx, n, false)
			case "kubernetes-one-port":
				s, cleanup, err = b.kubernetes(ctx, n, true)
			default:
				err = fmt.Errorf("unknown mode %q", mode)
			}
			if err != nil {
				return r.String(), fmt.Errorf("%s, %d routes: %w", mode, n, err)
			}
			for _, loaded := range []bool{false, true} {
				res := &propagationResult{Mode: mode, Routes: n, Loaded: loaded}
				if err := b.measure(ctx, s, res, changes); err != nil {
					s.stop()
					cleanup()
					b.dumpLogs()
					return r.String(), fmt.Errorf("%s, %d routes: %w", mode, n, err)
				}
				load := "idle"
				if loaded {
					load = fmt.Sprintf("%.0f req/s, %d failed", res.LoadRPS, res.LoadFails)
				}
				failures := ""
				if res.Failures > 0 {
					failures = fmt.Sprintf(" (%d not seen within 10 s)", res.Failures)
				}
				fmt.Fprintf(os.Stderr, "%s %d routes %s: p50 %v p99 %v max %v%s\n", mode, n, load, res.percentile(0.5), res.percentile(0.99), res.percentile(1), failures)
				if *verbose {
					fmt.Fprintf(os.Stderr, "  samples (in order): %v\n", res.Samples)
				}
				fmt.Fprintf(&r, "| %s | %d | %s | %d%s | %s | %s | %s |\n", mode, n, load, len(res.Samples), failures,
					ms(res.percentile(0.5)), ms(res.percentile(0.99)), ms(res.percentile(1)))
			}
			s.stop()
			cleanup()
		}
	}
	return r.String(), nil
}

// child runs one measurement in a fresh process.
func (b *bench) child(ctx context.Context, kind, dir string, n int) (pipelineResult, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-child", kind, "-dir", dir, "-n", strconv.Itoa(n))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return pipelineResult{}, fmt.Errorf("%s %d: %w", kind, n, err)
	}
	var res pipelineResult
	return res, json.Unmarshal(stdout.Bytes(), &res)
}

func (b *bench) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(b.work, "*.log"))
	for _, l := range logs {
		fmt.Fprintf(os.Stderr, "----- %s -----\n%s\n", filepath.Base(l), tail(l, 20))
	}
}

func secs(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
