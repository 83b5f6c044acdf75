// Package proc reads what the benchmarks measure of a process from /proc:
// CPU time, resident memory, the process tree (nginx's workers), and the
// machine's CPUs. Shared by bench/dataplane and bench/attack.
package proc

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// CPUTime sums user+system CPU time of processes (all their threads).
func CPUTime(pids []int) time.Duration {
	user, system := CPUTimes(pids)
	return user + system
}

// CPUTimes sums user and system CPU time of processes (all their threads)
// separately: a proxy's system time is mostly its socket calls, which
// every proxy makes alike, so the user share is where they differ.
func CPUTimes(pids []int) (user, system time.Duration) {
	var uticks, sticks int64
	for _, pid := range pids {
		f := statFields(pid)
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		uticks += utime
		sticks += stime
	}
	return time.Duration(uticks) * time.Second / clockTick, time.Duration(sticks) * time.Second / clockTick
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name (which may contain spaces), or nil.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
}

// RSS sums VmRSS of processes, in bytes.
func RSS(pids []int) uint64 {
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

// Tree returns root and its descendants (nginx's workers).
func Tree(root int) []int {
	parent := map[int]int{}
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range entries {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		if f := statFields(pid); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	out := []int{root}
	for changed := true; changed; {
		changed = false
		for pid, pp := range parent {
			if slices.Contains(out, pp) && !slices.Contains(out, pid) {
				out = append(out, pid)
				changed = true
			}
		}
	}
	return out
}

// NumCPU counts the machine's online CPUs (runtime.NumCPU counts only
// those this process is pinned to).
func NumCPU() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		z := a
		if found {
			z, _ = strconv.Atoi(hi)
		}
		n += z - a + 1
	}
	return n
}
