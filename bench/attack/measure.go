package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// procStat reads utime+stime and whether the process exists.
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += utime + stime
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// rss sums VmRSS of processes, in bytes.
func rss(pids []int) uint64 {
	var total uint64
	for _, pid := range pids {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
		f.Close()
	}
	return total
}

// processTree returns pid and its descendants (nginx's workers).
func processTree(root int) []int {
	parent := map[int]int{}
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		ppid, _ := strconv.Atoi(f[1])
		parent[pid] = ppid
	}
	out := []int{root}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if contains(out, pp) && !contains(out, pid) {
				out = append(out, pid)
				changed = true
			}
		}
	}
	return out
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

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
			if r := rss(t.pids()); r > s.peak {
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
