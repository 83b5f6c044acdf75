//go:build linux

package nodeagent

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// run runs a command and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CleanupNetNS kills every process in the named network namespaces whose
// names start with prefix, and deletes the namespaces. It is what makes
// cleanup hold even when the agent (or the whole test process) died
// without stopping its pods: the namespaces are named, so whatever runs
// in them can be found.
func CleanupNetNS(prefix string) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		KillNetNS(f[0])
		exec.Command("ip", "netns", "del", f[0]).Run()
	}
}

// KillNetNS SIGKILLs every process in a named network namespace: those
// whose /proc/<pid>/ns/net is the namespace's file (what `ip netns pids`
// compares, done here so nothing is missed when ip is not at hand).
func KillNetNS(name string) {
	var ns syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &ns); err != nil {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Dev == ns.Dev && st.Ino == ns.Ino {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// listening reports whether the process pid's network namespace has TCP
// sockets in LISTEN state: on every one of ports, or on any port when
// ports is empty. It reads /proc/<pid>/net/tcp{,6}, which show the
// sockets of the namespace the process is in: "ready once it listens"
// without knowing which port an image uses.
func listening(pid int, ports []int32) bool {
	open := map[int64]bool{}
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			local := fields[1]
			i := strings.LastIndexByte(local, ':')
			if port, err := strconv.ParseInt(local[i+1:], 16, 32); err == nil {
				open[port] = true
			}
		}
		f.Close()
	}
	if len(ports) == 0 {
		return len(open) > 0
	}
	for _, p := range ports {
		if !open[int64(p)] {
			return false
		}
	}
	return true
}
