package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
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
