package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

// target is a proxy under attack, freshly started for each attack so
// that one attack's memory does not count against the next.
type target struct {
	name string
	// http serves HTTP/1.1 (and, for Portico, h2c with prior knowledge);
	// h2c serves h2c with prior knowledge.
	http, h2c string
	cmd       *exec.Cmd
	exited    chan struct{}
	waitErr   error
	root      int
}

func (t *target) pids() []int { return proc.Tree(t.root) }

func (t *target) alive() bool {
	select {
	case <-t.exited:
		return false
	default:
		return true
	}
}

func (t *target) stop() {
	if !t.alive() {
		return
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(10 * time.Second):
		t.cmd.Process.Kill()
		<-t.exited
	}
}

// env is what every target needs: binaries, a scratch directory, the
// backend and the CPU the proxies are pinned to.
type env struct {
	work     string
	bins     string
	backend  string
	proxyCPU string
	logs     []string
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

// start runs a command pinned to the proxy CPU with its output in a log.
func (e *env) start(name string, extraEnv []string, bin string, args ...string) (*target, error) {
	if e.proxyCPU != "" {
		args = append([]string{"-c", e.proxyCPU, bin}, args...)
		bin = "taskset"
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	log, err := os.Create(filepath.Join(e.work, name+".log"))
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, log.Name())
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	t := &target{name: name, cmd: cmd, exited: make(chan struct{}), root: cmd.Process.Pid}
	go func() {
		t.waitErr = cmd.Wait()
		log.Close()
		close(t.exited)
	}()
	return t, nil
}

// portico runs `gateway-controller --standalone` (controller, file
// provider and embedded edge proxy in one process, as a user runs it)
// with a Gateway on port 80 routing everything to the backend; Istio's
// default retry policy applies, so request bodies are buffered for
// retries.
func portico(e *env) (*target, error) {
	cfg := filepath.Join(e.work, "portico")
	os.MkdirAll(cfg, 0o755)
	yaml := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*']
  gateways: [istio-system/bench]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: %s}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`, port(e.backend))
	if err := os.WriteFile(filepath.Join(cfg, "bench.yaml"), []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	h1, admin := freeAddr(), freeAddr()
	t, err := e.start("portico", []string{"GOMAXPROCS=" + gomaxprocs(e)}, filepath.Join(e.bins, "gateway-controller"),
		"--standalone", "--config-dir", cfg, "--xds-address", freeAddr(), "--debug-address", "", "--admin-address", admin,
		"--access-log", "off", "--port-map", "80:"+port(h1), "--drain-time", "1s", "--log-level", "error")
	if err != nil {
		return nil, err
	}
	t.name, t.http, t.h2c = "portico", h1, h1
	if err := waitReady(t, "http://"+h1+"/", 30*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("portico: %w", err)
	}
	return t, nil
}

func gomaxprocs(e *env) string {
	if e.proxyCPU == "" {
		return strconv.Itoa(proc.NumCPU())
	}
	n := 1
	for _, c := range e.proxyCPU {
		if c == ',' {
			n++
		}
	}
	return strconv.Itoa(n)
}

// nginx runs nginx with its defaults where an attack is concerned
// (timeouts, buffers, HTTP/2 limits) and the same routing: one worker,
// file descriptors up to the process limit.
func nginx(e *env, nofile uint64) (*target, error) {
	dir := filepath.Join(e.work, "nginx")
	os.MkdirAll(dir, 0o755)
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		os.MkdirAll(filepath.Join(dir, d), 0o777)
		os.Chmod(filepath.Join(dir, d), 0o777)
	}
	os.Chmod(e.work, 0o755)
	os.Chmod(dir, 0o755)
	h1, h2c := freeAddr(), freeAddr()
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile %[5]d;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;
events { worker_connections %[6]d; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend {
    server %[2]s;
    keepalive 64;
  }
  server {
    listen %[3]s;
    listen %[4]s http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}
`, dir, e.backend, h1, h2c, nofile, nofile-100)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	t, err := e.start("nginx", nil, "nginx", "-p", dir, "-c", confPath)
	if err != nil {
		return nil, err
	}
	t.name, t.http, t.h2c = "nginx", h1, h2c
	if err := waitReady(t, "http://"+h1+"/", 15*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return t, nil
}

func waitReady(t *target, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if !t.alive() {
			return fmt.Errorf("exited: %v", t.waitErr)
		}
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving after %v: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// backend answers every request with a fixed 200 after reading its body.
// It runs in a process of its own at the ordinary client's priority
// (see measuringPriority): in the load generator's process its
// goroutines would wait behind the attackers', which never block.
type backend struct {
	ln     net.Listener
	cmd    *exec.Cmd
	exited chan struct{}
}

var okResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")

func startBackend(ctx context.Context) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		ln.Close()
		return nil, err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		ln.Close()
		return nil, err
	}
	args := []string{self, "-backend-child"}
	if p := measuringPriority(); p != nil {
		args = append(p, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("starting the backend: %w", err)
	}
	b := &backend{ln: ln, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait() // CommandContext kills it when ctx ends
		close(b.exited)
	}()
	return b, nil
}

// stop kills the backend process and waits until it has exited: without
// it the bench's own exit raced CommandContext's kill, and every run left
// an orphaned backend behind.
func (b *backend) stop() {
	b.cmd.Process.Kill()
	<-b.exited
	b.ln.Close()
}

// backendChild serves the listener inherited as fd 3 until the parent
// kills the process.
func backendChild() {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatalf("backend: %v", err)
		}
		go func() {
			defer c.Close()
			serveBackend(c)
		}()
	}
}

func serveBackend(c net.Conn) {
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
		if _, err := c.Write(okResponse); err != nil {
			return
		}
	}
}

func (b *backend) addr() string { return b.ln.Addr().String() }
