//go:build linux

package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// pod is one running pod: its network namespace, its containers and the
// worker goroutine that owns them.
type pod struct {
	a          *Agent
	uid        types.UID
	n          int
	netns, ip  string
	veth, dir  string
	ctx        context.Context
	cancel     context.CancelFunc
	done       chan struct{}
	containers []*container

	mu     sync.Mutex
	obj    *corev1.Pod
	reason string // why the pod is not running yet (shown on every waiting container)
	msg    string
	netUp  bool
}

// container is one container's process.
type container struct {
	spec     corev1.Container
	root     string
	cmd      *exec.Cmd
	exited   chan struct{}
	started  time.Time
	ready    bool
	restarts int32
	lastExit *corev1.ContainerStateTerminated
	waiting  string // reason while not started
	message  string
}

func newPod(a *Agent, obj *corev1.Pod, n int) *pod {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pod{a: a, uid: obj.UID, n: n, obj: obj, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		netns: fmt.Sprintf("%s%d", a.cfg.NetNSPrefix, n), veth: fmt.Sprintf("%s%d", a.cfg.VethPrefix, n), ip: a.podIP(n),
		dir: filepath.Join(a.cfg.Work, "pods", fmt.Sprintf("%s_%s_%d", obj.Namespace, obj.Name, n)), reason: "ContainerCreating"}
	for _, c := range obj.Spec.Containers {
		p.containers = append(p.containers, &container{spec: c, root: filepath.Join(p.dir, c.Name), waiting: "ContainerCreating"})
	}
	return p
}

func (p *pod) log() interface{ Info(string, ...any) } {
	return p.a.cfg.Log.WithValues("pod", p.obj.Namespace+"/"+p.obj.Name)
}

// run is the pod's worker: it owns the containers until ctx ends.
func (p *pod) run() {
	defer close(p.done)
	p.publish()
	if err := p.setupNetwork(); err != nil {
		p.fail("NetworkSetupFailed", err)
		return
	}
	p.mu.Lock()
	p.netUp = true
	p.mu.Unlock()
	p.publish()
	// Materialize every container's root, retrying while a Secret or
	// ConfigMap it mounts does not exist yet.
	for _, c := range p.containers {
		for {
			err := p.prepare(c)
			if err == nil {
				break
			}
			p.mu.Lock()
			changed := c.message != err.Error()
			c.message = err.Error()
			if strings.Contains(err.Error(), "unknown image") {
				c.waiting = "ErrImagePull"
			}
			p.mu.Unlock()
			if changed {
				p.publish()
			}
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	for _, c := range p.containers {
		if err := p.start(c); err != nil {
			p.fail("StartError", err)
			return
		}
	}
	p.publish()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		changed := false
		for _, c := range p.containers {
			changed = p.supervise(c, n) || changed
		}
		if changed {
			p.publish()
		}
	}
}

// setupNetwork gives the pod its namespace: a veth into the bridge, the
// pod IP, a default route through the bridge, and unprivileged low ports
// (as the provisioned proxy's sysctl asks).
func (p *pod) setupNetwork() error {
	cfg := p.a.cfg
	for _, args := range [][]string{
		{"netns", "add", p.netns},
		{"link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.netns},
		{"link", "set", p.veth, "master", cfg.Bridge, "up"},
		{"-n", p.netns, "addr", "add", fmt.Sprintf("%s/%d", p.ip, cfg.PrefixLen), "dev", "eth0"},
		{"-n", p.netns, "link", "set", "eth0", "up"},
		{"-n", p.netns, "link", "set", "lo", "up"},
		{"-n", p.netns, "route", "add", "default", "via", cfg.BridgeIP},
	} {
		if err := run("ip", args...); err != nil {
			return err
		}
	}
	return run("ip", "netns", "exec", p.netns, "sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0")
}

// prepare builds a container's root: the image's files (hard links),
// /etc/hosts, /tmp, and its volume mounts written in place.
func (p *pod) prepare(c *container) error {
	img, ok := p.a.image(c.spec.Image)
	if !ok {
		return fmt.Errorf("unknown image %q (the node agent runs only the images it maps to local binaries)", c.spec.Image)
	}
	os.RemoveAll(c.root)
	if err := linkTree(img.Dir, c.root); err != nil {
		return fmt.Errorf("unpacking image %s: %w", c.spec.Image, err)
	}
	for _, d := range []string{"etc", "tmp", "dev", "proc"} {
		if err := os.MkdirAll(filepath.Join(c.root, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(c.root, "tmp"), 0o1777)
	if err := os.WriteFile(filepath.Join(c.root, "etc", "hosts"), p.a.hostsFile(p.obj, p.ip), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.root, "etc", "resolv.conf"), []byte("# no cluster DNS in the conformance harness\n"), 0o644); err != nil {
		return err
	}
	for _, m := range c.spec.VolumeMounts {
		var vol *corev1.Volume
		for i := range p.obj.Spec.Volumes {
			if p.obj.Spec.Volumes[i].Name == m.Name {
				vol = &p.obj.Spec.Volumes[i]
			}
		}
		if vol == nil {
			return fmt.Errorf("volume mount %s: no volume of that name", m.Name)
		}
		files, err := p.volumeFiles(vol)
		if err != nil {
			return fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		target := filepath.Join(c.root, filepath.Clean("/"+m.MountPath))
		if m.SubPath != "" {
			f, ok := files[m.SubPath]
			if !ok {
				return fmt.Errorf("volume %s: no file %s for subPath", vol.Name, m.SubPath)
			}
			files = map[string]file{"": f}
		}
		if err := os.MkdirAll(target, 0o755); err != nil && m.SubPath == "" {
			return err
		}
		for rel, f := range files {
			path := target
			if rel != "" {
				path = filepath.Join(target, filepath.Clean("/"+rel))
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, f.data, f.mode); err != nil {
				return err
			}
		}
	}
	return nil
}

type file struct {
	data []byte
	mode os.FileMode
}

// volumeFiles reads what a volume holds. A Secret or ConfigMap that does
// not exist (and is not optional) is an error the worker retries.
func (p *pod) volumeFiles(v *corev1.Volume) (map[string]file, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	cs := p.a.cfg.Client.CoreV1()
	ns := p.obj.Namespace
	mode := func(m *int32, def int32) os.FileMode {
		if m != nil {
			return os.FileMode(*m)
		}
		return os.FileMode(def)
	}
	out := map[string]file{}
	add := func(data map[string][]byte, items []corev1.KeyToPath, def os.FileMode) error {
		if len(items) == 0 {
			for k, b := range data {
				out[k] = file{b, def}
			}
			return nil
		}
		for _, it := range items {
			b, ok := data[it.Key]
			if !ok {
				return fmt.Errorf("key %s not found", it.Key)
			}
			out[it.Path] = file{b, mode(it.Mode, int32(def))}
		}
		return nil
	}
	secret := func(name string, optional *bool, items []corev1.KeyToPath, def os.FileMode) error {
		s, err := cs.Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("secret %s/%s: %w", ns, name, err)
		}
		return add(s.Data, items, def)
	}
	configMap := func(name string, optional *bool, items []corev1.KeyToPath, def os.FileMode) error {
		m, err := cs.ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ptr.Deref(optional, false) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("configmap %s/%s: %w", ns, name, err)
		}
		data := map[string][]byte{}
		for k, s := range m.Data {
			data[k] = []byte(s)
		}
		for k, b := range m.BinaryData {
			data[k] = b
		}
		return add(data, items, def)
	}
	switch {
	case v.Secret != nil:
		return out, secret(v.Secret.SecretName, v.Secret.Optional, v.Secret.Items, mode(v.Secret.DefaultMode, 0o644))
	case v.ConfigMap != nil:
		return out, configMap(v.ConfigMap.Name, v.ConfigMap.Optional, v.ConfigMap.Items, mode(v.ConfigMap.DefaultMode, 0o644))
	case v.Projected != nil:
		def := mode(v.Projected.DefaultMode, 0o644)
		for _, src := range v.Projected.Sources {
			var err error
			switch {
			case src.Secret != nil:
				err = secret(src.Secret.Name, src.Secret.Optional, src.Secret.Items, def)
			case src.ConfigMap != nil:
				err = configMap(src.ConfigMap.Name, src.ConfigMap.Optional, src.ConfigMap.Items, def)
			case src.ServiceAccountToken != nil:
				err = p.token(ctx, src.ServiceAccountToken, out, def)
			case src.DownwardAPI != nil:
				for _, it := range src.DownwardAPI.Items {
					if it.FieldRef != nil {
						out[it.Path] = file{[]byte(p.field(it.FieldRef.FieldPath)), def}
					}
				}
			}
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	case v.DownwardAPI != nil:
		for _, it := range v.DownwardAPI.Items {
			if it.FieldRef != nil {
				out[it.Path] = file{[]byte(p.field(it.FieldRef.FieldPath)), mode(v.DownwardAPI.DefaultMode, 0o644)}
			}
		}
		return out, nil
	}
	return out, nil // emptyDir and anything else: an empty directory
}

// token requests a service account token bound to the pod, as the
// kubelet's projected token volume does.
func (p *pod) token(ctx context.Context, src *corev1.ServiceAccountTokenProjection, out map[string]file, def os.FileMode) error {
	sa := p.obj.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var aud []string
	if src.Audience != "" {
		aud = []string{src.Audience}
	}
	tr, err := p.a.cfg.Client.CoreV1().ServiceAccounts(p.obj.Namespace).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: aud, ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.obj.Name, UID: p.obj.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %s/%s: %w", p.obj.Namespace, sa, err)
	}
	out[src.Path] = file{[]byte(tr.Status.Token), def}
	return nil
}

func (p *pod) field(path string) string {
	switch path {
	case "metadata.name":
		return p.obj.Name
	case "metadata.namespace":
		return p.obj.Namespace
	case "metadata.uid":
		return string(p.obj.UID)
	case "status.podIP":
		return p.ip
	case "spec.nodeName":
		return p.obj.Spec.NodeName
	case "spec.serviceAccountName":
		return p.obj.Spec.ServiceAccountName
	}
	return ""
}

// start runs the container's process: chrooted into its root, in the
// pod's network namespace, output appended to <container>.log.
func (p *pod) start(c *container) error {
	img, _ := p.a.image(c.spec.Image)
	argv := c.spec.Command
	if len(argv) == 0 {
		argv = img.Entrypoint
	}
	argv = append(append([]string{}, argv...), c.spec.Args...)
	if len(argv) == 0 {
		return fmt.Errorf("container %s: no command and the image has no entrypoint", c.spec.Name)
	}
	logf, err := os.OpenFile(filepath.Join(p.dir, c.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	chroot, err := exec.LookPath("chroot") // resolved here: the container's PATH has no sbin
	if err != nil {
		logf.Close()
		return err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.netns, chroot, c.root}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=" + p.obj.Name}
	for _, e := range c.spec.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = p.field(e.ValueFrom.FieldRef.FieldPath)
		}
		if e.ValueFrom == nil && v == "" && e.Name == "POD_IP" {
			v = p.ip
		}
		cmd.Env = append(cmd.Env, e.Name+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting container %s: %w", c.spec.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	p.mu.Lock()
	c.cmd, c.exited, c.started, c.ready, c.waiting, c.message = cmd, exited, time.Now(), false, "", ""
	p.mu.Unlock()
	p.log().Info("started container", "container", c.spec.Name, "ip", p.ip, "argv", strings.Join(argv, " "))
	return nil
}

// supervise restarts an exited container (restartPolicy permitting) and
// probes readiness; it reports whether the status changed.
func (p *pod) supervise(c *container, tick int) bool {
	select {
	case <-c.exited:
		code := int32(-1)
		if c.cmd.ProcessState != nil {
			code = int32(c.cmd.ProcessState.ExitCode())
		}
		p.mu.Lock()
		c.lastExit = &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", StartedAt: metav1.NewTime(c.started), FinishedAt: metav1.Now()}
		if code == 0 {
			c.lastExit.Reason = "Completed"
		}
		c.ready = false
		policy := p.obj.Spec.RestartPolicy
		p.mu.Unlock()
		p.log().Info("container exited", "container", c.spec.Name, "code", code, "restarts", c.restarts,
			"output", lastLines(filepath.Join(p.dir, c.spec.Name+".log"), 5))
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
			p.mu.Lock()
			c.exited = nil // never again
			p.mu.Unlock()
			return true
		}
		p.mu.Lock()
		c.restarts++
		c.waiting = "CrashLoopBackOff"
		c.cmd = nil
		p.mu.Unlock()
		select {
		case <-p.ctx.Done():
			return false
		case <-time.After(time.Second):
		}
		if err := p.start(c); err != nil {
			p.log().Info("restarting container failed", "container", c.spec.Name, "error", err.Error())
		}
		return true
	default:
	}
	if c.cmd == nil {
		return false
	}
	ready := p.probe(c, tick)
	p.mu.Lock()
	defer p.mu.Unlock()
	if ready == c.ready {
		return false
	}
	c.ready = ready
	return true
}

// probe runs the readiness probe (httpGet, tcpSocket) on its period; a
// container without one is ready once it listens (on its declared ports,
// or on any port).
func (p *pod) probe(c *container, tick int) bool {
	pr := c.spec.ReadinessProbe
	if pr == nil {
		var ports []int32
		for _, cp := range c.spec.Ports {
			if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
				ports = append(ports, cp.ContainerPort)
			}
		}
		return listening(c.cmd.Process.Pid, ports)
	}
	period := max(int(pr.PeriodSeconds), 1) * 10 // ticks of 100 ms
	if c.ready && tick%period != 0 {
		return c.ready
	}
	if !c.ready && tick%2 != 0 { // while not ready, probe every 200 ms: tests wait for readiness
		return false
	}
	port := func(ps intstr.IntOrString) string {
		if ps.Type == intstr.Int {
			return strconv.Itoa(ps.IntValue())
		}
		for _, cp := range c.spec.Ports {
			if cp.Name == ps.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return ps.StrVal
	}
	switch {
	case pr.HTTPGet != nil:
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		client := http.Client{Timeout: time.Second}
		resp, err := client.Get(fmt.Sprintf("%s://%s:%s%s", scheme, p.ip, port(pr.HTTPGet.Port), pr.HTTPGet.Path))
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		return dialReady(p.ip + ":" + port(pr.TCPSocket.Port))
	}
	return true // exec and gRPC probes: not supported; ready once started
}

// fail marks the pod Failed with why.
func (p *pod) fail(reason string, err error) {
	p.log().Info("pod failed", "reason", reason, "error", err.Error())
	p.mu.Lock()
	p.reason, p.msg = reason, err.Error()
	p.mu.Unlock()
	p.publish()
}

// publish pushes the pod's current status to virtual-kubelet.
func (p *pod) publish() {
	p.a.push(p.snapshot())
}

// snapshot is the pod with its status as the agent sees it.
func (p *pod) snapshot() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.obj.DeepCopy()
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: p.a.cfg.BridgeIP, HostIPs: []corev1.HostIP{{IP: p.a.cfg.BridgeIP}},
		StartTime: &out.CreationTimestamp, QOSClass: out.Status.QOSClass} // the API server's QoS class is immutable
	if p.netUp {
		st.PodIP, st.PodIPs = p.ip, []corev1.PodIP{{IP: p.ip}}
	}
	allReady, allStarted := true, true
	for _, c := range p.containers {
		cs := corev1.ContainerStatus{Name: c.spec.Name, Image: c.spec.Image, ImageID: "portico-nodeagent://" + c.spec.Image,
			RestartCount: c.restarts, Ready: c.ready, LastTerminationState: corev1.ContainerState{Terminated: c.lastExit}}
		switch {
		case c.cmd != nil && c.exited != nil:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
			cs.Started = ptr.To(true)
			cs.ContainerID = fmt.Sprintf("portico-nodeagent://%d", c.cmd.Process.Pid)
		case c.cmd != nil && c.exited == nil && c.lastExit != nil:
			cs.State.Terminated = c.lastExit
			allStarted = false
		default:
			reason := c.waiting
			if p.msg != "" {
				reason = p.reason
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.message}
			allStarted = false
		}
		allReady = allReady && c.ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	if allStarted {
		st.Phase = corev1.PodRunning
	}
	if p.msg != "" {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, p.reason, p.msg
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: out.CreationTimestamp}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, allReady && allStarted),
		cond(corev1.PodReady, allReady && allStarted),
	}
	out.Status = st
	return out
}

// stop ends the pod: SIGTERM, up to grace for the processes to exit,
// SIGKILL, then the network namespace (and with it the veth) and the
// roots go. Safe to call more than once.
func (p *pod) stop(grace time.Duration) {
	p.cancel()
	<-p.done
	var waits []chan struct{}
	for _, c := range p.containers {
		if c.cmd != nil && c.cmd.Process != nil && c.exited != nil {
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
			waits = append(waits, c.exited)
		}
	}
	deadline := time.After(grace)
	for _, w := range waits {
		select {
		case <-w:
		case <-deadline:
		}
	}
	for _, c := range p.containers {
		if c.cmd != nil && c.cmd.Process != nil {
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-time.After(5 * time.Second):
		}
	}
	KillNetNS(p.netns)
	run("ip", "netns", "del", p.netns)
	run("ip", "link", "del", p.veth) // gone with the namespace, normally
	os.RemoveAll(p.dir)
}

// linkTree recreates src under dst with hard links to its files (copies
// when linking across file systems fails).
func linkTree(src, dst string) error {
	return filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if err := os.Link(path, target); err == nil {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// lastLines is the end of a container's log, for the agent's own log.
func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
