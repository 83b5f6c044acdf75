package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

// caddy runs Debian's Caddy with reverse_proxy: the Go proxy users would
// pick instead of Portico. HTTP/1.1 on one port, TLS with HTTP/1.1 and
// HTTP/2 on another; no TCP (that needs a plugin Debian does not ship).
func caddy(e *env) (*target, error) {
	dir := filepath.Join(e.work, "caddy")
	os.MkdirAll(dir, 0o755)
	h1, h2 := freeAddr(), freeAddr()
	conf := fmt.Sprintf(`{
	admin off
	auto_https off
	storage file_system %[1]s/data
	log {
		level ERROR
	}
}
http://:%[2]s {
	reverse_proxy %[4]s
}
https://:%[3]s {
	tls %[5]s/server.crt %[5]s/server.key
	reverse_proxy %[4]s
}
`, dir, port(h1), port(h2), e.be.httpAddr, e.certs)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd, err := e.command("caddy", []string{"GOMAXPROCS=" + gomaxprocs(e), "HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir},
		"caddy", "run", "--config", path, "--adapter", "caddyfile")
	if err != nil {
		return nil, err
	}
	t := &target{name: "caddy", procs: []*exec.Cmd{cmd}, ports: map[string]string{"http1": h1, "https": h2, "h2": h2},
		pids: func() []int { return proc.Tree(cmd.Process.Pid) }}
	if err := waitHTTP("http://"+h1+"/", 15*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("caddy: %w", err)
	}
	return t, nil
}

// goproxy runs net/http/httputil.ReverseProxy (this binary, re-executed
// with -serve-goproxy): what a plain Go reverse proxy costs, with no
// routing, filters or configuration of its own.
func goproxy(e *env) (*target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	h1, h2 := freeAddr(), freeAddr()
	cmd, err := e.command("goproxy", []string{"GOMAXPROCS=" + gomaxprocs(e)}, self,
		"-serve-goproxy", strings.Join([]string{h1, h2, e.be.httpAddr, e.certs}, ","))
	if err != nil {
		return nil, err
	}
	t := &target{name: "goproxy", procs: []*exec.Cmd{cmd}, ports: map[string]string{"http1": h1, "https": h2, "h2": h2},
		pids: func() []int { return []int{cmd.Process.Pid} }}
	if err := waitHTTP("http://"+h1+"/", 15*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	return t, nil
}

// runGoProxy is the goproxy target's process: it serves until SIGINT.
func runGoProxy(arg string) error {
	parts := strings.Split(arg, ",")
	if len(parts) != 4 {
		return fmt.Errorf("-serve-goproxy wants h1addr,tlsaddr,backend,certdir, got %q", arg)
	}
	h1, h2, backend, certs := parts[0], parts[1], parts[2], parts[3]
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	// As many idle upstream connections as the largest load keeps busy
	// (the default of 2 per host would make it dial per request).
	rp.Transport = &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"))
	if err != nil {
		return err
	}
	plain := &http.Server{Addr: h1, Handler: rp}
	secure := &http.Server{Addr: h2, Handler: rp, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	l1, err := net.Listen("tcp", h1)
	if err != nil {
		return err
	}
	l2, err := net.Listen("tcp", h2)
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- plain.Serve(l1) }()
	go func() { errs <- secure.ServeTLS(l2, "", "") }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-errs:
		return err
	}
	plain.Close()
	secure.Close()
	return nil
}
