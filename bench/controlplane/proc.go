package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// status reads a figure (in kB) from /proc/self/status: VmRSS, VmHWM.
func status(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func numCPU() int { return runtime.NumCPU() }

// cpuSeconds is the CPU time (user + system) this process used so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
