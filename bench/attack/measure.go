package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

// sampler records the peak RSS of a target's processes until stopped.
type sampler struct {
	peak uint64
	stop context.CancelFunc
	done chan struct{}
}

func sample(t *target, every time.Duration) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if r := proc.RSS(t.pids()); r > s.peak {
				s.peak = r
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) Stop() uint64 {
	s.stop()
	<-s.done
	return s.peak
}

// legitResult is what the ordinary client's process reports.
type legitResult struct {
	Latencies []time.Duration `json:"latencies"`
	Failures  int             `json:"failures"`
	FirstErr  string          `json:"firstErr,omitempty"`
}

// measuringPriority is the command prefix that runs the measuring
// processes (the ordinary client and the backend, which share the load
// generator's CPU with the attackers) ahead of the attackers: real-time
// FIFO priority where chrt exists, else nice -10. nice alone is not
// enough: a nice -10 task woken while an attacker holds the CPU still
// waits out part of the attacker's slice, which put a steady 6 ms tail on
// the ordinary client's p99 under rapid reset that was the generator's
// CPU, not the proxy (2026-11-28: portico 8.4 ms with nice, 2.1 ms with
// chrt, idle 2.8 ms). The measuring processes are light (one request
// every 20 ms), so FIFO priority cannot starve the attackers. nil when
// not root.
func measuringPriority() []string {
	if os.Geteuid() != 0 {
		return nil
	}
	if _, err := exec.LookPath("chrt"); err == nil {
		return []string{"chrt", "-f", "10"}
	}
	return []string{"nice", "-n", "-10"}
}

// runLegitProcess runs the ordinary client in a process of its own at a
// higher CPU priority (see measuringPriority) than the attackers, which
// saturate the load generator's CPU: its latency then measures the proxy,
// not the queue for the generator's CPU. Without the privilege to raise
// the priority, it runs at the same one and says so.
func runLegitProcess(ctx context.Context, addr string, interval, d time.Duration) *legit {
	self, err := os.Executable()
	if err != nil {
		return &legit{failures: 1, firstErr: err.Error()}
	}
	args := []string{self, "-legit-child", addr, "-legit-interval", interval.String(), "-legit-for", d.String()}
	if p := measuringPriority(); p != nil {
		args = append(p, args...)
	} else {
		log.Printf("not root: the ordinary client runs at the attackers' CPU priority")
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var r legitResult
	if err == nil {
		err = json.Unmarshal(out, &r)
	}
	if err != nil {
		return &legit{failures: 1, firstErr: fmt.Sprintf("ordinary client process: %v", err)}
	}
	return &legit{latencies: r.Latencies, failures: r.Failures, firstErr: r.FirstErr}
}

// legitChild is the ordinary client's process (see runLegitProcess).
func legitChild(addr string, interval, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	l := runLegit(ctx, addr, interval)
	json.NewEncoder(os.Stdout).Encode(legitResult{Latencies: l.latencies, Failures: l.failures, FirstErr: l.firstErr})
}

// legit is an ordinary client: one request every interval on a
// keep-alive connection (a new one when it fails), each bounded by 2 s.
type legit struct {
	mu        sync.Mutex
	latencies []time.Duration
	failures  int
	firstErr  string
}

func runLegit(ctx context.Context, addr string, interval time.Duration) *legit {
	l := &legit{}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	defer tr.CloseIdleConnections()
	for {
		select {
		case <-ctx.Done():
			return l
		case <-tick.C:
		}
		start := time.Now()
		req, _ := http.NewRequest("GET", "http://"+addr+"/legit", nil)
		req.Host = "legit.example.com"
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		took := time.Since(start)
		l.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				l.failures++
				if l.firstErr == "" {
					l.firstErr = err.Error()
				}
			}
		} else {
			l.latencies = append(l.latencies, took)
		}
		l.mu.Unlock()
	}
}

// percentile of the recorded latencies (0 when none).
func (l *legit) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.latencies) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), l.latencies...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func (l *legit) count() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.latencies), l.failures
}

// warmUp serves ordinary traffic as fast as it goes for d: 4 HTTP/1.1
// keep-alive clients and 4 HTTP/2 (h2c) streams. A proxy that has served
// traffic is in its steady state — nginx's pools are allocated, Go's heap
// has cycled up to its GC goal — and that, not a freshly started process,
// is the state whose growth under an attack matters. Returns the number of
// requests served.
func warmUp(ctx context.Context, t *target, d time.Duration) int64 {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	h1 := &http.Transport{MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	h2 := &http.Transport{Protocols: &h2c, MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	var served atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		rt, addr := http.RoundTripper(h1), t.http
		if i%2 == 1 {
			rt, addr = h2, t.h2c
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: rt, Timeout: 2 * time.Second}
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/warm-up", nil)
				req.Host = "legit.example.com"
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					served.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return served.Load()
}
