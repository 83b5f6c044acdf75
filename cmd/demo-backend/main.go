// Command demo-backend is the backend the quickstart, the end-to-end tests
// and the benchmarks put behind the gateway: an HTTP "counter" service and
// a MySQL-like TCP service.
//
// HTTP:
//
//	GET /               {"count":N,"version":"v1","host":"…"} (counts requests)
//	GET /echo           the request as JSON (method, path, host, headers)
//	GET /status/NNN     answers with that status
//	GET /delay/MS       answers after MS milliseconds
//	GET /misbehave      from now on answer 503 (seed 002's rating service)
//	GET /behave         back to normal
//	GET /bytes/N        N bytes of body
//
// TCP: greets with a MySQL-like banner, then echoes each line.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18080", "HTTP listen address (empty disables)")
	tcpAddr := flag.String("tcp", "127.0.0.1:13306", "TCP listen address (empty disables)")
	version := flag.String("version", "v1", "version reported in responses")
	name := flag.String("name", "counter", "service name reported in responses")
	quiet := flag.Bool("quiet", false, "do not log requests")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	host, _ := os.Hostname()
	b := &backend{version: *version, name: *name, host: host, quiet: *quiet}
	var wg sync.WaitGroup
	if *httpAddr != "" {
		lis, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			log.Fatal(err)
		}
		// HTTP/1.1 and cleartext HTTP/2 with prior knowledge (gRPC, h2c).
		srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Print(err)
			}
		}()
		go func() { <-ctx.Done(); srv.Close() }()
		log.Printf("%s %s: HTTP on %s", *name, *version, lis.Addr())
	}
	if *tcpAddr != "" {
		lis, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); b.serveTCP(ctx, lis) }()
		go func() { <-ctx.Done(); lis.Close() }()
		log.Printf("%s %s: TCP (MySQL-like) on %s", *name, *version, lis.Addr())
	}
	fmt.Println("READY")
	wg.Wait()
}

type backend struct {
	version, name, host string
	quiet               bool
	count               atomic.Int64
	broken              atomic.Bool
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.count.Add(1)
	if !b.quiet {
		log.Printf("Request %d %s %s", n, r.Method, r.URL.Path)
	}
	w.Header().Set("x-backend-version", b.version)
	path := r.URL.Path
	switch {
	case strings.HasSuffix(path, "/misbehave"):
		b.broken.Store(true)
		fmt.Fprintln(w, "Ratings endpoint returns 503 error.")
		return
	case strings.HasSuffix(path, "/behave"):
		b.broken.Store(false)
		fmt.Fprintln(w, "Back to normal")
		return
	}
	if b.broken.Load() {
		http.Error(w, "misbehaving", http.StatusServiceUnavailable)
		return
	}
	switch {
	case strings.HasPrefix(path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		if err != nil || code < 100 || code > 599 {
			http.Error(w, "bad status", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%d\n", code)
	case strings.HasPrefix(path, "/delay/"):
		ms, _ := strconv.Atoi(strings.TrimPrefix(path, "/delay/"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		b.json(w, r, n)
	case strings.HasPrefix(path, "/bytes/"):
		size, _ := strconv.Atoi(strings.TrimPrefix(path, "/bytes/"))
		w.Header().Set("Content-Length", strconv.Itoa(size))
		chunk := make([]byte, 32<<10)
		for size > 0 {
			k := min(size, len(chunk))
			w.Write(chunk[:k])
			size -= k
		}
	case strings.HasPrefix(path, "/echo"):
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		hdr := map[string]string{}
		for k, v := range r.Header {
			hdr[strings.ToLower(k)] = strings.Join(v, ",")
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.RequestURI(), "host": r.Host,
			"headers": hdr, "body": string(body), "version": b.version, "proto": r.Proto})
	default:
		b.json(w, r, n)
	}
}

func (b *backend) json(w http.ResponseWriter, _ *http.Request, n int64) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"service\":%q,\"count\":%d,\"version\":%q,\"host\":%q}\n", b.name, n, b.version, b.host)
}

func (b *backend) serveTCP(ctx context.Context, lis net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			go func() { <-ctx.Done(); c.Close() }()
			fmt.Fprintf(c, "5.7.44-portico-demo %s %s ready\n", b.name, b.version)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s\n", sc.Text())
			}
		}()
	}
}
