// Command dataplane benchmarks the edge proxy against nginx, haproxy and
// Caddy (Debian's packages), a plain net/http/httputil.ReverseProxy, and
// no proxy at all, in one run on
// loopback: HTTP/1.1 keep-alive, HTTPS keep-alive, HTTP/2 over TLS and raw
// TCP. It reports requests/s, p50/p99 latency and the proxy's CPU time per
// request — the figure that does not depend on how fast the load
// generator is — and each proxy's CPU cost relative to nginx.
//
// Run it from the repository root (make bench does): it builds the
// Portico binaries. On machines with two or more CPUs the proxies are
// pinned to the last CPU and the load generator and backends to the
// others, so each proxy gets one core of its own.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portico-gateway/portico/bench/internal/proc"
	"github.com/portico-gateway/portico/internal/testpki"
)

var profileProto string

type row struct {
	target, proto string
	conc          string // "16" connections, or "4×10" HTTP/2 connections × streams
	res           loadResult
	cpu           time.Duration // proxy CPU during the measurement window
	user          time.Duration // its user-space share
}

func (r row) cpuPerRequest() time.Duration {
	if r.res.requests == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.res.requests)
}

func (r row) userPerRequest() time.Duration {
	if r.res.requests == 0 {
		return 0
	}
	return r.user / time.Duration(r.res.requests)
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measurement time per target, protocol and round")
	rounds := flag.Int("rounds", 3, "interleaved rounds; figures are medians")
	warmup := flag.Duration("warmup", 2*time.Second, "warm-up before each measurement")
	conns := flag.String("conns", "16", "connections (HTTP/1.1, HTTPS, TCP); a list (16,64,256) sweeps concurrency")
	h2conns := flag.Int("h2-conns", 4, "HTTP/2 connections")
	h2streams := flag.String("h2-streams", "4", "concurrent HTTP/2 streams per connection; a list (10,100) sweeps them")
	idleConns := flag.Int("idle-conns", 0, "also measure memory per idle keep-alive connection with this many (e.g. 10000)")
	activeStreams := flag.Int("h2-active-streams", 0, "also measure memory per active HTTP/2 stream with this many in flight (e.g. 1000)")
	targets := flag.String("targets", "direct,portico,nginx,haproxy,caddy,goproxy", "what to measure")
	protos := flag.String("protos", "http1,https,h2,tcp", "protocols")
	out := flag.String("out", "", "also write the Markdown table to this file")
	pin := flag.Bool("pin", true, "pin proxies to the last CPU and the load to the others (needs 2+ CPUs)")
	cpuprofile := flag.String("portico-cpuprofile", "", "write a CPU profile of the edge proxy for HTTP/1.1 to this file (and its allocations to FILE.allocs)")
	flag.StringVar(&profileProto, "portico-profile-proto", "http1", "the protocol -portico-cpuprofile profiles")
	binDir := flag.String("bin-dir", "", "use the Portico binaries in this directory instead of building them")
	serveGoProxy := flag.String("serve-goproxy", "", "internal: run the httputil.ReverseProxy target (h1addr,tlsaddr,backend,certdir)")
	flag.Parse()
	if *serveGoProxy != "" {
		if err := runGoProxy(*serveGoProxy); err != nil {
			fmt.Fprintln(os.Stderr, "goproxy:", err)
			os.Exit(1)
		}
		return
	}
	concs, err := intList(*conns)
	if err == nil {
		var streams []int
		if streams, err = intList(*h2streams); err == nil {
			sweep.conns, sweep.h2conns, sweep.h2streams = concs, *h2conns, streams
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		os.Exit(2)
	}
	sweep.idleConns, sweep.activeStreams = *idleConns, *activeStreams

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *rounds, *duration, *warmup, strings.Split(*targets, ","), strings.Split(*protos, ","), *out, *pin, *cpuprofile, *binDir); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		os.Exit(1)
	}
}

// sweep is the concurrency levels measured, and the memory measurements.
var sweep struct {
	conns                    []int
	h2conns                  int
	h2streams                []int
	idleConns, activeStreams int
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive whole numbers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, rounds int, duration, warmup time.Duration, targets, protos []string, out string, pin bool, cpuprofile, binDir string) error {
	work, err := os.MkdirTemp("", "portico-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	e := &env{work: work, bins: filepath.Join(work, "bin"), certs: filepath.Join(work, "certs")}
	if binDir != "" {
		e.bins = binDir
	} else {
		fmt.Fprintln(os.Stderr, "building Portico…")
		build := exec.Command("go", "build", "-o", e.bins+"/", "./cmd/gateway-controller", "./cmd/edge-proxy")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building (run from the repository root): %w", err)
		}
	}
	os.MkdirAll(e.certs, 0o755)
	for _, n := range []string{"server.crt", "server.key", "ca.crt"} {
		os.WriteFile(filepath.Join(e.certs, n), testpki.Read(n), 0o600)
	}
	os.WriteFile(filepath.Join(e.certs, "combined.pem"), append(testpki.Read("server.crt"), testpki.Read("server.key")...), 0o600)

	if n := proc.NumCPU(); pin && n >= 2 {
		var set unix.CPUSet
		for i := 0; i < n-1; i++ {
			set.Set(i)
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pinning the load generator: %w", err)
		}
		e.proxyCPU = fmt.Sprint(n - 1)
	}
	be, err := startBackends(ctx)
	if err != nil {
		return err
	}
	e.be = be
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(testpki.Read("ca.crt"))
	tlsCfg := &tls.Config{ServerName: "bench.example.com", RootCAs: pool, ClientSessionCache: tls.NewLRUClientSessionCache(64)}

	starters := map[string]func(*env) (*target, error){"direct": direct, "portico": portico, "nginx": nginx, "haproxy": haproxy,
		"caddy": caddy, "goproxy": goproxy}
	// Every target runs for the whole benchmark; rounds interleave them so
	// that drift in the machine's speed affects all alike, and each figure
	// reported is the median over the rounds.
	var running []*target
	defer func() {
		for _, t := range running {
			t.stop()
		}
	}()
	for _, name := range targets {
		start, ok := starters[name]
		if !ok {
			return fmt.Errorf("unknown target %q", name)
		}
		if (name == "nginx" || name == "haproxy" || name == "caddy") && !lookPath(name) {
			fmt.Fprintf(os.Stderr, "skipping %s: not installed (bench/run.sh installs it)\n", name)
			continue
		}
		t, err := start(e)
		if err != nil {
			dumpLogs(e)
			return err
		}
		running = append(running, t)
	}
	// Memory first, on proxies that have served nothing yet (a Go
	// proxy's heap after the load rounds would hide what a connection
	// costs).
	var mem string
	if sweep.idleConns > 0 || sweep.activeStreams > 0 {
		restart := func(t *target) (*target, error) {
			t.stop()
			return starters[t.name](e)
		}
		if mem, err = measureMemory(ctx, running, tlsCfg, sweep.idleConns, sweep.activeStreams, restart); err != nil {
			return err
		}
	}
	samples := map[string][]row{} // target/proto/concurrency → one row per round
	var order []string
	type level struct {
		conc           string
		conns, streams int
	}
	levels := func(proto string) []level {
		var ls []level
		if proto == "h2" {
			for _, n := range sweep.h2streams {
				ls = append(ls, level{fmt.Sprintf("%d×%d", sweep.h2conns, n), sweep.h2conns, n})
			}
			return ls
		}
		for _, n := range sweep.conns {
			ls = append(ls, level{fmt.Sprint(n), n, 0})
		}
		return ls
	}
	for round := 0; round < rounds; round++ {
		for _, proto := range protos {
			for _, lv := range levels(proto) {
				for i := range running {
					t := running[(i+round)%len(running)]
					addr, ok := t.ports[proto]
					if !ok {
						continue
					}
					spec := loadSpec{proto: proto, addr: addr, tls: tlsCfg, conns: lv.conns, streams: lv.streams, warmup: warmup, duration: duration}
					var before, beforeUser time.Duration
					profile := t.name == "portico" && proto == profileProto && cpuprofile != "" && round == 0
					res, err := runLoad(ctx, spec, func() {
						u, s := proc.CPUTimes(t.pids())
						before, beforeUser = u+s, u
						if profile {
							go fetchProfile(t, "profile", cpuprofile, duration)
							go fetchProfile(t, "allocs", cpuprofile+".allocs", duration)
						}
					}, func() {})
					afterUser, afterSystem := proc.CPUTimes(t.pids())
					after := afterUser + afterSystem
					if err != nil {
						dumpLogs(e)
						return fmt.Errorf("%s %s: %w", t.name, proto, err)
					}
					r := row{target: t.name, proto: proto, conc: lv.conc, res: res, cpu: after - before, user: afterUser - beforeUser}
					key := t.name + "/" + proto + "/" + lv.conc
					if _, seen := samples[key]; !seen {
						order = append(order, key)
					}
					samples[key] = append(samples[key], r)
					fmt.Fprintf(os.Stderr, "round %d  %-8s %-6s %-6s %9.0f req/s  p50 %7s  p99 %7s  cpu %6.1f µs/req (user %4.1f)  errors %d\n", round+1, t.name, proto, lv.conc, res.rps(),
						res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), us(r.cpuPerRequest()), us(r.userPerRequest()), res.errors)
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
		}
	}
	var rows []row
	for _, key := range order {
		rows = append(rows, median(samples[key]))
	}
	table := report(rows, duration, rounds, e.proxyCPU != "")
	if mem != "" {
		table += "\n" + mem
	}
	fmt.Print(table)
	if out != "" {
		return os.WriteFile(out, []byte(table), 0o644)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func dumpLogs(e *env) {
	for _, l := range e.logs {
		b, _ := os.ReadFile(l)
		fmt.Fprintf(os.Stderr, "----- %s -----\n%s\n", filepath.Base(l), tail(string(b), 30))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fetchProfile saves a profile of the edge proxy over the measurement
// window, from its admin interface's /debug/pprof: "profile" (CPU) or
// "allocs" (what was allocated during the window).
func fetchProfile(t *target, kind, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", t.admin, kind, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

var protoNames = map[string]string{"http1": "HTTP/1.1 keep-alive", "https": "HTTPS keep-alive", "h2": "HTTP/2 (TLS)", "tcp": "TCP (64-byte echo)"}

// median takes, figure by figure, the median over rounds.
func median(rs []row) row {
	pick := func(less func(a, b row) bool) row {
		c := append([]row(nil), rs...)
		sort.Slice(c, func(i, j int) bool { return less(c[i], c[j]) })
		return c[len(c)/2]
	}
	out := pick(func(a, b row) bool { return a.cpuPerRequest() < b.cpuPerRequest() })
	perRequest := out.cpuPerRequest() // before requests is replaced below
	out.res.requests = pick(func(a, b row) bool { return a.res.rps() < b.res.rps() }).res.requests
	out.res.elapsed = pick(func(a, b row) bool { return a.res.rps() < b.res.rps() }).res.elapsed
	out.cpu = perRequest * time.Duration(out.res.requests) // keep cpu/req the median
	out.res.p50 = pick(func(a, b row) bool { return a.res.p50 < b.res.p50 }).res.p50
	out.res.p99 = pick(func(a, b row) bool { return a.res.p99 < b.res.p99 }).res.p99
	return out
}

func report(rows []row, duration time.Duration, rounds int, pinned bool) string {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "Data plane, %s on %s (%d CPUs%s, load average at the end %s): medians of %d interleaved rounds of %v, access logs off. Concurrency: connections, or HTTP/2 connections × streams each.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), host, proc.NumCPU(), map[bool]string{true: ", each proxy pinned to one CPU", false: ""}[pinned],
		strings.Join(strings.Fields(string(load))[:3], " "), rounds, duration)
	fmt.Fprintln(&b, "| Protocol | Concurrency | Target | req/s | p50 | p99 | proxy CPU µs/req | CPU vs nginx |")
	fmt.Fprintln(&b, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
	nginxCPU := map[string]time.Duration{}
	for _, r := range rows {
		if r.target == "nginx" {
			nginxCPU[r.proto+"/"+r.conc] = r.cpuPerRequest()
		}
	}
	for _, proto := range []string{"http1", "https", "h2", "tcp"} {
		for _, r := range rows {
			if r.proto != proto {
				continue
			}
			cpu, ratio := "—", "—"
			if r.target != "direct" {
				cpu = fmt.Sprintf("%.1f", us(r.cpuPerRequest()))
				if n := nginxCPU[proto+"/"+r.conc]; n > 0 {
					ratio = fmt.Sprintf("%.2f×", float64(r.cpuPerRequest())/float64(n))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %v | %v | %s | %s |\n", protoNames[proto], r.conc, r.target, r.res.rps(),
				r.res.p50.Round(time.Microsecond), r.res.p99.Round(time.Microsecond), cpu, ratio)
		}
	}
	return b.String()
}
