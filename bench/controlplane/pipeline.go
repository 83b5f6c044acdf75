package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/provider/file"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/xds"
)

var ingress = map[string]string{"istio": "ingressgateway"}

// pipelineResult is what a child process reports.
type pipelineResult struct {
	VirtualServices int     `json:"virtualServices"`
	Routes          int     `json:"routes"`
	Objects         int     `json:"objects"`
	FirstPublish    float64 `json:"firstPublishSeconds"` // provider start → snapshot published
	// Decoded is provider start → its first snapshot handed to the
	// controller (every file read and decoded).
	Decoded    float64 `json:"decodedSeconds"`
	Build      float64 `json:"buildSeconds"` // bind + translate + publish of that build
	PeakRSSMiB float64 `json:"peakRSSMiB"`
	// CPU (user + system) the process used until the first snapshot was
	// published: on a shared machine a steadier figure than wall time.
	CPU float64 `json:"cpuSeconds,omitempty"`
	// RSS and live heap once the first snapshot is out and a GC returned
	// what it could.
	SteadyMiB     float64 `json:"steadyMiB,omitempty"`
	SteadyHeapMiB float64 `json:"steadyHeapMiB,omitempty"`
	// Memory release.
	BaselineMiB float64 `json:"baselineMiB,omitempty"`
	LoadedMiB   float64 `json:"loadedMiB,omitempty"`
	ReleasedMiB float64 `json:"releasedMiB,omitempty"`
	// The live heap (HeapAlloc after a GC), which RSS follows only loosely: the runtime keeps
	// some freed spans and its own metadata.
	BaselineHeapMiB float64 `json:"baselineHeapMiB,omitempty"`
	LoadedHeapMiB   float64 `json:"loadedHeapMiB,omitempty"`
	ReleasedHeapMiB float64 `json:"releasedHeapMiB,omitempty"`
	// After the first of two create/delete rounds.
	FirstReleasedMiB     float64 `json:"firstReleasedMiB,omitempty"`
	FirstReleasedHeapMiB float64 `json:"firstReleasedHeapMiB,omitempty"`
}

type pipeline struct {
	ctrl   *controller.Controller
	cancel context.CancelFunc
	done   chan struct{}
	// firstUpdate is when the provider handed over its first snapshot
	// (Unix nanoseconds; 0 before).
	firstUpdate atomic.Int64
}

// startPipeline runs provider → controller → xDS server in this process,
// as standalone mode does (without a proxy: the snapshot is built for the
// ingress class all the same).
func startPipeline(dir string) *pipeline {
	ctx, cancel := context.WithCancel(context.Background())
	srv := xds.NewServer(logr.Discard(), gateway.ClassName)
	ctrl := controller.New(logr.Discard(), srv, nil, controller.Options{StaticClasses: []map[string]string{ingress}})
	p := &pipeline{ctrl: ctrl, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		go ctrl.Run(ctx)
		file.New(dir, logr.Discard(), file.Options{}).Run(ctx, func(r *resource.Resources) {
			p.firstUpdate.CompareAndSwap(0, time.Now().UnixNano())
			ctrl.Update(r)
		})
	}()
	return p
}

func (p *pipeline) stop() { p.cancel(); <-p.done }

// waitFor polls the controller's state until cond holds.
func (p *pipeline) waitFor(what string, cond func(*controller.State) bool) (*controller.State, error) {
	deadline := time.Now().Add(5 * time.Minute)
	var last *controller.State
	for time.Now().Before(deadline) {
		if st := p.ctrl.State(); st != nil && cond(st) {
			return st, nil
		} else if st != nil {
			last = st
		}
		time.Sleep(time.Millisecond)
	}
	if last != nil && len(last.Errors) > 0 {
		return nil, fmt.Errorf("timed out waiting for %s; the last build failed: %v", what, last.Errors)
	}
	return nil, fmt.Errorf("timed out waiting for %s", what)
}

// childPipeline measures one size in a fresh process, so that peak RSS is
// this size's alone.
func childPipeline(dir string, n int) (pipelineResult, error) {
	o := scale.Options{VirtualServices: n}
	start := time.Now()
	p := startPipeline(dir)
	defer p.stop()
	st, err := p.waitFor("the first build", func(st *controller.State) bool { return st.Published })
	if err != nil {
		return pipelineResult{}, err
	}
	r := pipelineResult{VirtualServices: n, Routes: o.Routes(), Objects: st.Resources.Len(),
		FirstPublish: time.Since(start).Seconds(), Build: st.Duration.Seconds(), PeakRSSMiB: mib(status("VmHWM")), CPU: cpuSeconds(),
		Decoded: time.Unix(0, p.firstUpdate.Load()).Sub(start).Seconds()}
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.SteadyMiB, r.SteadyHeapMiB = mib(status("VmRSS")), float64(ms.HeapAlloc)/(1<<20)
	if os.Getenv("PORTICO_BENCH_MEMSTATS") != "" {
		fmt.Fprintf(os.Stderr, "memstats: heapAlloc %d heapInuse %d heapIdle %d heapReleased %d stackInuse %d mspan %d gcSys %d otherSys %d sys %d objects %d\n", ms.HeapAlloc>>20, ms.HeapInuse>>20, ms.HeapIdle>>20, ms.HeapReleased>>20, ms.StackInuse>>20, ms.MSpanInuse>>20, ms.GCSys>>20, ms.OtherSys>>20, ms.Sys>>20, ms.HeapObjects)
		if b, err := os.ReadFile("/proc/self/smaps_rollup"); err == nil {
			os.Stderr.Write(b)
		}
	}
	if path := os.Getenv("PORTICO_BENCH_HEAPPROFILE"); path != "" {
		// What stays live once the first snapshot is out.
		if err := writeHeapProfile(fmt.Sprintf("%s-pipeline-%d.pprof", path, n)); err != nil {
			return r, err
		}
	}
	return r, nil
}

// memoryOptions is the configuration of the memory measurement. Its
// Gateways are written before the services exist, so their number is
// fixed here: with the default (one per 100 VirtualServices) the
// directory got the one Gateway of an empty configuration, and nine in
// ten VirtualServices named a Gateway that did not exist and were never
// translated, which made the loaded figures look like a tenth of the
// routes.
func memoryOptions(n int) scale.Options {
	return scale.Options{VirtualServices: n, Gateways: max(1, min(10, (n+99)/100))}
}

// childMemory creates n VirtualServices (with their services) in a running
// pipeline, then deletes them, twice, and reports RSS and the live heap
// after a forced GC at each step.
func childMemory(dir string, n int) (pipelineResult, error) {
	o := memoryOptions(n)
	p := startPipeline(dir)
	defer p.stop()
	settle := func() (rss int64, heap float64) {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return status("VmRSS"), float64(ms.HeapAlloc) / (1 << 20)
	}
	base, err := p.waitFor("the first build", func(st *controller.State) bool { return st.Published })
	if err != nil {
		return pipelineResult{}, err
	}
	baseObjects := base.Resources.Len()
	rss, heap := settle()
	r := pipelineResult{VirtualServices: n, Routes: o.Routes(), BaselineMiB: mib(rss), BaselineHeapMiB: heap}
	// Two rounds: what the first leaves behind may be one-time runtime
	// state (lazily built protobuf descriptors, type caches); what grows
	// again in the second would be a leak.
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i++ {
			if err := os.WriteFile(serviceFile(dir, i), []byte(scale.Join(o.Service(i, round))), 0o644); err != nil {
				return r, err
			}
		}
		st, err := p.waitFor("the services to be built", func(st *controller.State) bool { return st.Resources.Len() == baseObjects+6*n && st.Published })
		if err != nil {
			return r, err
		}
		r.Objects, r.Build = st.Resources.Len(), st.Duration.Seconds()
		rss, r.LoadedHeapMiB = settle()
		r.LoadedMiB = mib(rss)
		if path := os.Getenv("PORTICO_BENCH_HEAPPROFILE"); path != "" && round == 0 {
			if err := writeHeapProfile(fmt.Sprintf("%s-memory-%d.pprof", path, n)); err != nil {
				return r, err
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "svc-*.yaml"))
		for _, f := range files {
			os.Remove(f)
		}
		if _, err := p.waitFor("the services to be gone", func(st *controller.State) bool { return st.Resources.Len() == baseObjects }); err != nil {
			return r, err
		}
		rss, heap := settle()
		if round == 0 {
			r.FirstReleasedMiB, r.FirstReleasedHeapMiB = mib(rss), heap
		} else {
			r.ReleasedMiB, r.ReleasedHeapMiB = mib(rss), heap
		}
	}
	r.PeakRSSMiB = mib(status("VmHWM"))
	return r, nil
}

// runChild is the entry point of a child process.
// With PORTICO_BENCH_CPUPROFILE set, it writes a CPU profile of the
// measurement there (suffixed with the kind and size); with
// PORTICO_BENCH_HEAPPROFILE set, a pipeline child writes a heap profile
// of what is live after the first snapshot; with PORTICO_BENCH_MEMSTATS
// set, it prints the runtime's memory statistics and the kernel's
// smaps_rollup then (where RSS above the live heap goes).
func runChild(kind, dir string, n int) error {
	var r pipelineResult
	var err error
	if rate, perr := strconv.Atoi(os.Getenv("PORTICO_BENCH_MEMPROFILERATE")); perr == nil && rate > 0 {
		// Finer heap profiles than the default one sample per 512 KiB.
		runtime.MemProfileRate = rate
	}
	if path := os.Getenv("PORTICO_BENCH_CPUPROFILE"); path != "" {
		f, ferr := os.Create(fmt.Sprintf("%s-%s-%d.pprof", path, kind, n))
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	switch kind {
	case "pipeline":
		r, err = childPipeline(dir, n)
	case "memory":
		r, err = childMemory(dir, n)
	default:
		err = fmt.Errorf("unknown child %q", kind)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// writeHeapProfile writes what is live after a GC.
func writeHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}
