// Command attack runs hostile loads — slowloris, stalled request bodies,
// HTTP/2 rapid reset, header bombs — against Portico standalone and nginx
// side by side on loopback, each for a bounded time on a freshly started
// proxy, while an ordinary client keeps making requests. It reports the
// proxy's RSS growth and CPU time under each attack and the ordinary
// client's latency against its idle value.
//
//	go run ./bench/attack -duration 30s -out bench/results/attack.md
//
// Budgets (issue 11): RSS growth at most 2× nginx's, legitimate-client
// p99 at most 2× its idle value, no crash.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

type options struct {
	duration       time.Duration
	warmUp         time.Duration
	idle           time.Duration
	slowlorisConns int
	stalledConns   int
	resetConns     int
	bombClients    int
	legitInterval  time.Duration
}

func main() {
	o := &options{}
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long each attack lasts (at most 5m)")
	flag.DurationVar(&o.warmUp, "warm-up", 5*time.Second, "ordinary traffic at full speed before anything is measured (the proxy's steady serving state)")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "how long the ordinary client runs alone first (its idle latency; as long as an attack by default, so that both p99s rest on as many samples — at 10 s the idle p99 of one proxy ranged 0.9–3.1 ms between attacks)")
	flag.IntVar(&o.slowlorisConns, "slowloris-conns", 5000, "slowloris connections kept open")
	flag.IntVar(&o.stalledConns, "stalled-conns", 400, "connections with a stalled 1 MiB body")
	flag.IntVar(&o.resetConns, "reset-conns", 4, "HTTP/2 connections doing rapid reset")
	flag.IntVar(&o.bombClients, "bomb-clients", 16, "concurrent header-bomb clients")
	flag.DurationVar(&o.legitInterval, "legit-interval", 20*time.Millisecond, "time between the ordinary client's requests")
	bins := flag.String("bins", "", "directory with Portico's binaries (default: build them from this tree)")
	out := flag.String("out", "bench/results/attack.md", "write the results table here")
	only := flag.String("attacks", "slowloris,stalled-body,rapid-reset,header-bomb", "attacks to run")
	targets := flag.String("targets", "portico,nginx", "proxies to attack")
	proxyCPU := flag.String("proxy-cpu", "1", "CPUs the proxies are pinned to (taskset list; empty: no pinning)")
	label := flag.String("label", "", "a label for this run in the results (e.g. before/after)")
	legitChildAddr := flag.String("legit-child", "", "internal: run only the ordinary client against this address and print its latencies")
	backendChildFlag := flag.Bool("backend-child", false, "internal: serve the backend on the listener inherited as fd 3")
	legitFor := flag.Duration("legit-for", 0, "internal: how long the -legit-child client runs")
	flag.Parse()
	if *backendChildFlag {
		backendChild()
		return
	}
	if *legitChildAddr != "" {
		legitChild(*legitChildAddr, o.legitInterval, *legitFor)
		return
	}
	if o.duration <= 0 || o.duration > 5*time.Minute {
		log.Fatal("-duration must be in (0, 5m]")
	}
	nofile := raiseFileLimit()
	if err := run(o, *bins, *out, *only, *targets, *proxyCPU, *label, nofile); err != nil {
		log.Fatal(err)
	}
}

// raiseFileLimit raises the open-file limit to the hard limit (children
// inherit it) and returns it.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

type row struct {
	attack, target              string
	before, peak, after         uint64
	cpu                         time.Duration
	idleP50, idleP99, p50, p99  time.Duration
	ok, failed                  int
	warmedUp                    int64
	firstErr, attacker, crashed string
}

func run(o *options, bins, out, only, targets, proxyCPU, label string, nofile uint64) error {
	work, err := os.MkdirTemp("", "portico-attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bins == "" {
		bins = filepath.Join(work, "bin")
		build := exec.Command("go", "build", "-o", bins+"/", "./cmd/gateway-controller")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building Portico: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	be, err := startBackend(ctx)
	if err != nil {
		return err
	}
	defer be.stop()
	e := &env{work: work, bins: bins, backend: be.addr(), proxyCPU: proxyCPU}
	if proxyCPU != "" {
		if _, err := exec.LookPath("taskset"); err != nil || proc.NumCPU() < 2 {
			e.proxyCPU = ""
		}
	}
	var rows []row
	for _, a := range attacks() {
		if !strings.Contains(","+only+",", ","+a.name+",") {
			continue
		}
		for _, tn := range strings.Split(targets, ",") {
			r, err := runOne(ctx, e, a, tn, o, nofile)
			if err != nil {
				return fmt.Errorf("%s against %s: %w", a.name, tn, err)
			}
			log.Printf("%-13s %-8s RSS %s → peak %s (+%s), CPU %.1fs, legit p50 %v p99 %v (idle %v / %v), %d ok %d failed %s; %s",
				r.attack, r.target, mib(r.before), mib(r.peak), mib(r.peak-min(r.peak, r.before)), r.cpu.Seconds(),
				r.p50, r.p99, r.idleP50, r.idleP99, r.ok, r.failed, r.crashed, r.attacker)
			rows = append(rows, r)
		}
	}
	report := table(rows, o, label, proxyCPU)
	fmt.Print(report)
	if out != "" {
		return os.WriteFile(out, []byte(report), 0o644)
	}
	return nil
}

func runOne(ctx context.Context, e *env, a attack, name string, o *options, nofile uint64) (row, error) {
	var t *target
	var err error
	switch name {
	case "portico":
		t, err = portico(e)
	case "nginx":
		t, err = nginx(e, nofile)
	default:
		return row{}, fmt.Errorf("unknown target %q", name)
	}
	if err != nil {
		return row{}, err
	}
	defer t.stop()
	r := row{attack: a.name, target: name}
	r.warmedUp = warmUp(ctx, t, o.warmUp)
	// The ordinary client alone: its idle latency.
	idle := runLegitProcess(ctx, t.http, o.legitInterval, o.idle)
	r.idleP50, r.idleP99 = idle.percentile(0.5), idle.percentile(0.99)

	r.before = proc.RSS(t.pids())
	cpu0 := proc.CPUTime(t.pids())
	s := sample(t, 200*time.Millisecond)
	actx, stop := context.WithTimeout(ctx, o.duration)
	defer stop()
	legitDone := make(chan *legit)
	go func() { legitDone <- runLegitProcess(ctx, t.http, o.legitInterval, o.duration) }()
	r.attacker = a.run(actx, t, o)
	l := <-legitDone
	r.peak = s.Stop()
	r.cpu = proc.CPUTime(t.pids()) - cpu0
	r.p50, r.p99 = l.percentile(0.5), l.percentile(0.99)
	r.ok, r.failed = l.count()
	r.firstErr = l.firstErr
	if !t.alive() {
		r.crashed = fmt.Sprintf("CRASHED (%v)", t.waitErr)
	}
	// What is held a moment after the attack stopped.
	time.Sleep(2 * time.Second)
	r.after = proc.RSS(t.pids())
	return r, nil
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func table(rows []row, o *options, label, proxyCPU string) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Attack bench%s, %s on %s (%d CPUs, proxies pinned to CPU %q), %v per attack after a %v warm-up at full speed: slowloris %d connections, stalled bodies %d connections, rapid reset %d connections, header bomb %d clients; ordinary client every %v.\n\n",
		map[bool]string{true: " (" + label + ")", false: ""}[label != ""], time.Now().UTC().Format("2006-01-02"), host, proc.NumCPU(), proxyCPU,
		o.duration, o.warmUp, o.slowlorisConns, o.stalledConns, o.resetConns, o.bombClients, o.legitInterval)
	b.WriteString("| Attack | Proxy | RSS before | RSS peak | RSS growth | vs nginx | CPU s | ordinary p50 / p99 (idle) | p99 vs idle | ordinary failed | Crash |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |\n")
	growth := func(r row) uint64 { return r.peak - min(r.peak, r.before) }
	nginxGrowth := map[string]uint64{}
	for _, r := range rows {
		if r.target == "nginx" {
			nginxGrowth[r.attack] = growth(r)
		}
	}
	for _, r := range rows {
		vs := "—"
		if g, ok := nginxGrowth[r.attack]; ok && r.target != "nginx" {
			vs = fmt.Sprintf("%.1f×", float64(growth(r))/float64(max(g, 1<<20)))
		}
		ratio := "—"
		if r.idleP99 > 0 && r.p99 > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(r.p99)/float64(r.idleP99))
		}
		crash := "no"
		if r.crashed != "" {
			crash = r.crashed
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.1f | %s / %s (%s / %s) | %s | %d of %d | %s |\n",
			r.attack, r.target, mib(r.before), mib(r.peak), mib(growth(r)), vs, r.cpu.Seconds(),
			ms(r.p50), ms(r.p99), ms(r.idleP50), ms(r.idleP99), ratio, r.failed, r.ok+r.failed, crash)
	}
	b.WriteString("\nWhat the attackers managed:\n\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "* %s against %s (after %d warm-up requests): %s", r.attack, r.target, r.warmedUp, r.attacker)
		if r.firstErr != "" {
			fmt.Fprintf(&b, "; the ordinary client's first failure: %s", r.firstErr)
		}
		b.WriteString("\n")
	}
	return b.String()
}
