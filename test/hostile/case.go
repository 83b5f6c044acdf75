// Package hostile is a table of hostile clients — malformed, ambiguous,
// oversized, slow and flooding, over HTTP/1.1, HTTP/2 and TLS — and the
// code that plays each one against a proxy over real sockets and reports,
// in a short comparable form, what the client got and what the backend
// behind the proxy received.
//
// The same table runs against Portico in this package's test (which
// asserts Want) and against nginx in bench/hostile (which measures the
// reference each row states in its Nginx field).
package hostile

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
)

// Case is one hostile client.
type Case struct {
	// Name is unique, lowercase, dash-separated; Category groups the
	// table: "http1", "h2", "tls", "slow", "bomb".
	Name, Category string
	// What the client does, in a few words.
	What string
	// Nginx is nginx 1.22's behaviour on the same bytes, measured by
	// bench/hostile (nginx-reference.md), in Result's format.
	Nginx string
	// Want lists the acceptable results for Portico (Result.Outcome); a
	// trailing ", *" accepts any number of forwarded requests.
	Want []string
	// Check, when set, inspects the requests the backend received with
	// the case's token (after the client is done).
	Check func(env *Env, reqs []testenv.RecordedRequest) error
	// Slow cases wait for a server timeout; they may run concurrently.
	Slow bool
	// External cases connect from Env.External.
	External bool
	// Run plays the client and returns what it observed (the client half
	// of the result).
	Run func(ctx context.Context, env *Env) (string, error)
}

// Env is where a case runs.
type Env struct {
	// HTTP is the plain listener (HTTP/1.1); H2C serves HTTP/2 with prior
	// knowledge (the same address for Portico); TLS terminates TLS for
	// *.example.com with ALPN h2 and http/1.1.
	HTTP, H2C, TLS string
	// External is a local address that is neither loopback nor private:
	// a client dialing from it is external in Envoy's sense ("" if the
	// machine has none).
	External string
	// CA verifies the TLS listener's certificate.
	CA *x509.CertPool
	// Backend is the recording backend every route ends at.
	Backend *testenv.Recorder
	// Token is unique to this run of a case and appears in every request
	// target the case sends; Probe is a target that does not contain it.
	Token, Probe string
	// Wait bounds the wait for a response that should come promptly.
	Wait time.Duration
	// Timeout is the server's configured idle / header / body timeout:
	// slow cases wait a little beyond it. HandshakeTimeout bounds a TLS
	// handshake (the ClientHello's arrival).
	Timeout, HandshakeTimeout time.Duration
	// Heap, when the proxy runs in this process, returns its live heap
	// after a garbage collection (memory-bound cases compare before and
	// after); nil otherwise.
	Heap func() uint64
}

// Result is what a case observed: the client's half and the backend's.
type Result struct {
	// Client is what the client saw, e.g. "400 close", "200 200 keep",
	// "RST(PROTOCOL_ERROR) keep", "handshake ok 200", "- close".
	Client string
	// Forwarded counts complete requests with the case's token that the
	// backend received; Partial those whose body never completed.
	Forwarded, Partial int
	// CheckErr is the Check function's verdict (nil when it passed or
	// there is none).
	CheckErr error
	// Err is set when the case could not run at all.
	Err error
	// Healthy is false when a fresh, ordinary request after the case
	// failed: the proxy crashed or stopped serving.
	Healthy bool
	// Took is how long the case ran.
	Took time.Duration
}

// Outcome is the comparable part: client, then forwarded requests.
func (r Result) Outcome() string {
	s := r.Client
	if r.Forwarded > 0 {
		s += fmt.Sprintf(", %d fwd", r.Forwarded)
	}
	if r.Partial > 0 {
		s += fmt.Sprintf(", %d partial", r.Partial)
	}
	return s
}

// String is the outcome with the check's and health's verdicts.
func (r Result) String() string {
	s := r.Outcome()
	if r.Err != nil {
		s = "error: " + r.Err.Error()
	}
	if r.CheckErr != nil {
		s += " [check: " + r.CheckErr.Error() + "]"
	}
	if !r.Healthy {
		s += " [UNHEALTHY]"
	}
	return s
}

// Accepts reports whether a result is one of the case's wanted outcomes,
// with its check passed and the proxy healthy afterwards.
func (c *Case) Accepts(r Result) bool {
	if r.Err != nil || r.CheckErr != nil || !r.Healthy {
		return false
	}
	for _, w := range c.Want {
		if w == r.Outcome() || strings.HasSuffix(w, ", *") && strings.TrimSuffix(w, ", *") == r.Client {
			return true
		}
	}
	return false
}

// Play runs a case and collects the backend's view and the proxy's
// health afterwards.
func Play(ctx context.Context, c *Case, env *Env) Result {
	var r Result
	start := time.Now()
	defer func() { r.Took = time.Since(start) }()
	r.Client, r.Err = c.Run(ctx, env)
	// What the proxy forwards it forwards promptly; give a late request
	// (a smuggled one, a retry) a moment to land, and bodies to finish.
	reqs := env.Backend.WaitComplete(env.Token, 200*time.Millisecond)
	for _, q := range reqs {
		if q.Complete {
			r.Forwarded++
		} else {
			r.Partial++
		}
	}
	if c.Check != nil {
		r.CheckErr = c.Check(env, reqs)
	}
	r.Healthy = healthy(ctx, env)
	r.Took = time.Since(start)
	return r
}

// healthy makes one ordinary request on a fresh connection.
func healthy(ctx context.Context, env *Env) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		nc, err := net.DialTimeout("tcp", env.HTTP, time.Second)
		if err == nil {
			nc.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: health.example.com\r\nConnection: close\r\n\r\n", env.Probe+"-health")
			buf := make([]byte, 12)
			n, _ := readFull(nc, buf)
			nc.Close()
			if n == 12 && string(buf[:12]) == "HTTP/1.1 200" {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func readFull(nc net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := nc.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Nonce returns a random string that makes the tokens of one run unique.
func Nonce() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// For returns a copy of env for the i-th case of a run.
func (env *Env) For(i int, nonce string) *Env {
	e := *env
	e.Token = fmt.Sprintf("t%03dx%s", i, nonce)
	e.Probe = fmt.Sprintf("/probe%03dy%s", i, nonce)
	return &e
}

// RunAll plays every case: slow ones concurrently with each other and
// with the rest, which run one after another. done receives each result.
func RunAll(ctx context.Context, cases []*Case, env *Env, done func(*Case, Result)) {
	nonce := Nonce()
	var wg sync.WaitGroup
	for i, c := range cases {
		if !c.Slow {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			done(c, Play(ctx, c, env.For(i, nonce)))
		}()
	}
	for i, c := range cases {
		if !c.Slow && ctx.Err() == nil {
			done(c, Play(ctx, c, env.For(i, nonce)))
		}
	}
	wg.Wait()
}

// ExternalAddress is a local IPv4 address that is neither loopback nor
// private, so that a client dialing from it is external to a proxy
// listening on all addresses ("" if there is none).
func ExternalAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipn.IP.To4()
		if ip != nil && !ip.IsLoopback() && !ip.IsPrivate() && !ip.IsLinkLocalUnicast() {
			return ip.String()
		}
	}
	return ""
}

// expand replaces {T} with the token and {P} with the probe target.
func expand(s string, env *Env) string {
	return strings.NewReplacer("{T}", env.Token, "{P}", env.Probe).Replace(s)
}

// All returns the whole table, in the order it should run: cases that
// leave the proxy busy (floods) come last.
func All() []*Case {
	var all []*Case
	for _, group := range [][]*Case{http1Cases(), bombCases(), h2Cases(), tlsCases(), slowCases(), floodCases()} {
		all = append(all, group...)
	}
	return all
}
