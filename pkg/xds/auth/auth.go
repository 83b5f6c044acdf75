// Package auth authenticates and authorizes the proxies that connect to
// Portico's xDS server, as istiod does: a gRPC interceptor turns a stream's
// credentials (a Kubernetes service-account token sent as
// "authorization: Bearer …", a shared token, or a client certificate) into
// an Identity, and an Authorizer decides what that identity may claim to
// be (namespace, labels, hence which Gateways' configuration) and which
// Secrets it may receive.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Identity is what a proxy proved about itself.
type Identity struct {
	// Trusted identities (the embedded proxy, a holder of the standalone
	// token or of a client certificate from the configured CA) may claim
	// any namespace and labels and receive every Secret their class uses.
	Trusted bool `json:"trusted,omitempty"`
	// Kubernetes service account, and the pod a bound token names.
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	PodName        string `json:"podName,omitempty"`
	PodUID         string `json:"podUID,omitempty"`
	// Method says how it was proven: local, token, mtls, kubernetes.
	Method string `json:"method"`
}

func (i Identity) String() string {
	if i.Namespace == "" {
		return i.Method
	}
	s := "system:serviceaccount:" + i.Namespace + ":" + i.ServiceAccount
	if i.PodName != "" {
		s += " (pod " + i.Namespace + "/" + i.PodName + ")"
	}
	return s
}

// Authenticator proves a stream's identity from its context (metadata and
// peer). An error means the stream is refused as Unauthenticated.
type Authenticator interface {
	Authenticate(ctx context.Context) (Identity, error)
}

// AuthenticatorFunc adapts a function.
type AuthenticatorFunc func(ctx context.Context) (Identity, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context) (Identity, error) { return f(ctx) }

// Local trusts every peer: for a listener only this process (or this
// host's loopback, by the operator's choice) can reach.
func Local() Authenticator {
	return AuthenticatorFunc(func(context.Context) (Identity, error) {
		return Identity{Trusted: true, Method: "local"}, nil
	})
}

// ErrNoCredentials is returned when a stream carries none of the
// credentials an authenticator accepts.
var ErrNoCredentials = errors.New("no credentials: send a bearer token (authorization: Bearer …) or a client certificate")

// BearerToken reads "authorization: Bearer <token>" from a stream's
// metadata.
func BearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return "", ErrNoCredentials
	}
	if len(values) > 1 {
		return "", errors.New("more than one authorization header")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", errors.New("the authorization header is not a bearer token")
	}
	return strings.TrimSpace(token), nil
}

// StaticToken accepts streams that present a token read from a file (the
// standalone controller's --xds-token-file), compared in constant time.
// The file is read again when it changes, so the token can be rotated.
func StaticToken(path string) (Authenticator, error) {
	f := &tokenFile{path: path}
	if _, err := f.token(); err != nil {
		return nil, err
	}
	return AuthenticatorFunc(func(ctx context.Context) (Identity, error) {
		got, err := BearerToken(ctx)
		if err != nil {
			return Identity{}, err
		}
		want, err := f.token()
		if err != nil {
			return Identity{}, err
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return Identity{}, errors.New("wrong token")
		}
		return Identity{Trusted: true, Method: "token"}, nil
	}), nil
}

// tokenFile caches a token file's content by modification time and size.
type tokenFile struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	data []byte
}

// maxTokenSize bounds what is read as a token.
const maxTokenSize = 64 << 10

func (f *tokenFile) token() ([]byte, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("reading the xDS token: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data != nil && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return f.data, nil
	}
	if fi.Size() > maxTokenSize {
		return nil, fmt.Errorf("the xDS token file %s is larger than %d bytes", f.path, maxTokenSize)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("reading the xDS token: %w", err)
	}
	tok := []byte(strings.TrimSpace(string(b)))
	if len(tok) < 16 {
		return nil, fmt.Errorf("the xDS token in %s is too short (%d bytes, want at least 16)", f.path, len(tok))
	}
	f.data, f.mod, f.size = tok, fi.ModTime(), fi.Size()
	return f.data, nil
}

// ClientCertificate accepts streams whose TLS peer presented a certificate
// the server verified (the listener's tls.Config requires and checks it
// against the configured client CA).
func ClientCertificate() Authenticator {
	return AuthenticatorFunc(func(ctx context.Context) (Identity, error) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return Identity{}, ErrNoCredentials
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.VerifiedChains) == 0 {
			return Identity{}, ErrNoCredentials
		}
		return Identity{Trusted: true, Method: "mtls"}, nil
	})
}

// Any accepts a stream that any of the authenticators accepts, trying them
// in order.
func Any(as ...Authenticator) Authenticator {
	return AuthenticatorFunc(func(ctx context.Context) (Identity, error) {
		var errs []error
		for _, a := range as {
			id, err := a.Authenticate(ctx)
			if err == nil {
				return id, nil
			}
			errs = append(errs, err)
		}
		return Identity{}, errors.Join(errs...)
	})
}

type identityKey struct{}

// WithIdentity returns ctx carrying an identity.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the interceptor proved, if any.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Interceptors returns gRPC server options that authenticate every stream
// and call with a, refusing (Unauthenticated) those it rejects, and put
// the identity in the context the xDS server's callbacks see.
func Interceptors(a Authenticator, log logr.Logger) []grpc.ServerOption {
	rl := NewRateLimitedLog(log)
	check := func(ctx context.Context, method string) (context.Context, error) {
		id, err := a.Authenticate(ctx)
		if err != nil {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok {
				addr = p.Addr.String()
			}
			rl.Error(err, "xDS client refused: not authenticated", "peer", addr, "method", method)
			return nil, status.Errorf(codes.Unauthenticated, "authentication failed: %v", err)
		}
		return WithIdentity(ctx, id), nil
	}
	return []grpc.ServerOption{
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx, err := check(ss.Context(), info.FullMethod)
			if err != nil {
				return err
			}
			return handler(srv, &identifiedStream{ServerStream: ss, ctx: ctx})
		}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			ctx, err := check(ctx, info.FullMethod)
			if err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
	}
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

// RateLimitedLog logs refusals at error level, at most a few per second,
// so that a client retrying in a loop (or an attacker) cannot flood the
// log; it says how many were left out.
type RateLimitedLog struct {
	log     logr.Logger
	limit   *rate.Limiter
	mu      sync.Mutex
	dropped int
}

// NewRateLimitedLog logs through log.
func NewRateLimitedLog(log logr.Logger) *RateLimitedLog {
	return &RateLimitedLog{log: log, limit: rate.NewLimiter(5, 20)}
}

// Error logs unless over the rate.
func (l *RateLimitedLog) Error(err error, msg string, kv ...any) {
	if !l.limit.Allow() {
		l.mu.Lock()
		l.dropped++
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	if l.dropped > 0 {
		kv = append(kv, "similar_messages_suppressed", l.dropped)
		l.dropped = 0
	}
	l.mu.Unlock()
	l.log.Error(err, msg, kv...)
}
