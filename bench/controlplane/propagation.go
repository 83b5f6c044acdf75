package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gateway/portico/internal/scale"
)

// propagationResult is one row: how long a changed VirtualService takes to
// be served by the proxy.
type propagationResult struct {
	Mode      string // standalone, kubernetes
	Routes    int
	Loaded    bool
	Samples   []time.Duration
	Failures  int
	LoadRPS   float64 // background requests/s while measuring (loaded rows)
	LoadFails int64
}

func (r propagationResult) percentile(p float64) time.Duration {
	if len(r.Samples) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.Samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// system is a running controller and edge proxy.
type system struct {
	procs     []*exec.Cmd
	proxyAddr string // the proxy's port 80
	change    func(rev int) error
	rev       int // the revision the probe VirtualService is at
	// admin and debug serve the proxy's and the controller's pprof.
	admin, debug string
}

func (s *system) stop() {
	for _, p := range s.procs {
		p.Process.Signal(os.Interrupt)
	}
	for _, p := range s.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

func (b *bench) start(name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(filepath.Join(b.bins, name), args...)
	log, err := os.Create(filepath.Join(b.work, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// startProxy runs an edge proxy for the ingress class against xds.
func (b *bench) startProxy(s *system, xds string) error {
	s.proxyAddr, s.admin = freeAddr(), freeAddr()
	proxy, err := b.start("edge-proxy", append([]string{"--xds-address", xds, "--admin-address", s.admin, "--status-address", "",
		"--access-log", "off", "--termination-drain-duration", "0s", "--port-map", "80:" + port(s.proxyAddr) + ",443:" + port(freeAddr())}, b.proxyArgs...)...)
	if err != nil {
		return err
	}
	s.procs = append(s.procs, proxy)
	return nil
}

// standalone: the controller reads a directory; a change is a file
// replaced in it.
//
// onePort is the shape users most often have: every VirtualService on one
// Gateway port (Istio puts every host of port 80 into one route
// configuration, http.80), each change an atomic write through a
// dot-prefixed temporary file in the watched directory, as editors,
// kubectl cp and configuration tools do (an event on a hidden name makes
// the provider rescan the directory).
func (b *bench) standalone(routes int, onePort bool) (*system, error) {
	o := scale.Options{VirtualServices: scale.VirtualServicesForRoutes(routes)}
	name := fmt.Sprintf("standalone-%d", routes)
	change := func(dir string, rev int) error { return writeProbe(dir, rev, b.backendPort) }
	if onePort {
		o.Gateways = 1
		name += "-one-port"
		change = func(dir string, rev int) error { return writeProbeInPlace(dir, rev, b.backendPort) }
	}
	dir := filepath.Join(b.work, name, "config")
	if err := writeConfig(dir, o, b.backendPort); err != nil {
		return nil, err
	}
	xds := freeAddr()
	s := &system{change: func(rev int) error { return change(dir, rev) }, debug: freeAddr()}
	ctrl, err := b.start("gateway-controller", append([]string{"--standalone", "--no-proxy", "--config-dir", dir, "--xds-address", xds,
		"--debug-address", s.debug}, b.controllerArgs...)...)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, ctrl)
	if err := b.startProxy(s, xds); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// measure changes the probe VirtualService again and again and times how
// long until the proxy serves the new revision, polling through the data
// plane every millisecond.
func (b *bench) measure(ctx context.Context, s *system, res *propagationResult, changes int) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	revision := func() string {
		req, _ := http.NewRequest("GET", "http://"+s.proxyAddr+"/", nil)
		req.Host = "probe.gw-0.example.com"
		resp, err := client.Do(req)
		if err != nil {
			return ""
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("x-revision")
	}
	// The system is ready when the current revision is served.
	current := fmt.Sprint(s.rev)
	if err := poll(ctx, 3*time.Minute, func() bool { return revision() == current }); err != nil {
		return fmt.Errorf("waiting for the first configuration: %w", err)
	}
	var stopLoad func() (float64, int64)
	if res.Loaded {
		stopLoad = backgroundLoad(s.proxyAddr)
	}
	if b.profileDir != "" {
		name := fmt.Sprintf("%s-%d-%s", res.Mode, res.Routes, map[bool]string{true: "loaded", false: "idle"}[res.Loaded])
		go fetchProfile(s.admin, filepath.Join(b.profileDir, name+"-proxy.pprof"))
		if s.debug != "" {
			go fetchProfile(s.debug, filepath.Join(b.profileDir, name+"-controller.pprof"))
		}
	}
	for i := 0; i < changes; i++ {
		s.rev++
		rev := s.rev
		// Let the previous change settle, at a random phase.
		time.Sleep(time.Duration(150+rand.IntN(100)) * time.Millisecond)
		start := time.Now()
		if err := s.change(rev); err != nil {
			return err
		}
		want := fmt.Sprint(rev)
		if err := poll(ctx, 10*time.Second, func() bool { return revision() == want }); err != nil {
			res.Failures++
			continue
		}
		res.Samples = append(res.Samples, time.Since(start))
	}
	if stopLoad != nil {
		res.LoadRPS, res.LoadFails = stopLoad()
	}
	return ctx.Err()
}

func poll(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// backgroundLoad keeps four connections busy through the proxy until
// stopped (or for at most ten minutes); it returns requests/s and failures.
func backgroundLoad(addr string) func() (float64, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
				req.Host = "load.gw-0.example.com"
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	return func() (float64, int64) {
		cancel()
		wg.Wait()
		return float64(sent.Load()) / time.Since(start).Seconds(), failed.Load()
	}
}

// startBackend serves 200s for the probe and the background load.
func startBackend(ctx context.Context) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })}
	go srv.Serve(l)
	context.AfterFunc(ctx, func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fetchProfile saves a 5-second CPU profile from a pprof endpoint.
func fetchProfile(addr, path string) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=5")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}
