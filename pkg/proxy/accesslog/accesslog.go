// Package accesslog writes access logs in Envoy's default format, with
// Envoy's response flags, to a buffered writer flushed every second (as
// Envoy's file sink does), so logging costs little on the request path.
package accesslog

import (
	"bufio"
	"context"
	"io"
	"strconv"
	"sync"
	"time"
)

// Flags are Envoy's response flags.
type Flags uint32

// Response flags, in Envoy's print order.
const (
	FailedLocalHealthCheck           Flags = 1 << iota // LH
	NoHealthyUpstream                                  // UH
	UpstreamRequestTimeout                             // UT
	LocalReset                                         // LR
	UpstreamRemoteReset                                // UR
	UpstreamConnectionFailure                          // UF
	UpstreamConnectionTermination                      // UC
	UpstreamOverflow                                   // UO
	NoRouteFound                                       // NR
	DelayInjected                                      // DI
	FaultInjected                                      // FI
	RateLimited                                        // RL
	DownstreamConnectionTermination                    // DC
	UpstreamRetryLimitExceeded                         // URX
	StreamIdleTimeout                                  // SI
	DownstreamProtocolError                            // DPE
	UpstreamProtocolError                              // UPE
	NoClusterFound                                     // NC
	DurationTimeout                                    // DT
	UpstreamMaxStreamDurationReached                   // UMSDR
)

var flagNames = []string{"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "DC", "URX", "SI", "DPE", "UPE", "NC", "DT", "UMSDR"}

// String renders flags as Envoy does: comma-separated codes, "-" for none.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	return string(f.appendTo(nil))
}

// appendTo appends the comma-separated codes of f.
func (f Flags) appendTo(b []byte) []byte {
	start := len(b)
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if len(b) > start {
				b = append(b, ',')
			}
			b = append(b, n...)
		}
	}
	return b
}

// Entry is one logged request or connection.
type Entry struct {
	Start         time.Time
	Method        string
	Path          string
	Protocol      string // "HTTP/1.1", "HTTP/2"; empty for TCP
	Code          int
	Flags         Flags
	BytesReceived int64
	BytesSent     int64
	Duration      time.Duration
	// UpstreamServiceTime is the upstream's time to first byte; negative
	// when there was no upstream response.
	UpstreamServiceTime time.Duration
	ForwardedFor        string
	UserAgent           string
	RequestID           string
	Authority           string
	UpstreamHost        string
	TCP                 bool

	// Read only by configured formats (Compiled); the default format
	// does not need them.
	Scheme                         string
	Cluster                        string // UPSTREAM_CLUSTER
	RouteName                      string
	SNI                            string // REQUESTED_SERVER_NAME
	DownstreamRemote               string // host:port
	DownstreamLocal                string // host:port
	UpstreamLocal                  string // host:port
	ResponseCodeDetails            string
	UpstreamTransportFailureReason string
	// ReqHeaders and RespHeaders serve %REQ(X)% and %RESP(X)% for headers
	// without a field above; nil when not known (TCP).
	ReqHeaders  HeaderGetter
	RespHeaders HeaderGetter
}

// Logger writes entries.
type Logger struct {
	format *Compiled // nil: Envoy's default format, by Format
	mu     sync.Mutex
	w      *bufio.Writer
	out    io.Writer
}

// New returns a logger writing to out.
func New(out io.Writer) *Logger {
	return &Logger{w: bufio.NewWriterSize(out, 64<<10), out: out}
}

// NewWithFormat returns a logger writing to out with a compiled format
// (nil: Envoy's default).
func NewWithFormat(out io.Writer, f *Compiled) *Logger {
	l := New(out)
	l.format = f
	return l
}

// Run flushes every interval until ctx ends, then flushes once more.
func (l *Logger) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Flush()
			return
		case <-t.C:
			l.Flush()
		}
	}
}

// Flush writes buffered entries.
func (l *Logger) Flush() {
	l.mu.Lock()
	l.w.Flush()
	l.mu.Unlock()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendOrDash(b, s)
	return append(b, '"')
}

// appendOrDash appends s, or "-" when it is empty, escaping what would let
// a client forge log lines or terminal sequences: control characters,
// DEL, '"' and '\' become \xHH, as nginx writes them.
func appendOrDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hexDigit[c>>4], hexDigit[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}

const hexDigit = "0123456789ABCDEF"

// Format renders an entry in Envoy's default format:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
//	%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
//	"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
func Format(b []byte, e *Entry) []byte {
	b = append(b, '[')
	b = e.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, "] \""...)
	if e.TCP {
		b = append(b, "- - -"...)
	} else {
		b = appendOrDash(b, e.Method)
		b = append(b, ' ')
		b = appendOrDash(b, e.Path)
		b = append(b, ' ')
		b = appendOrDash(b, e.Protocol)
	}
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, ' ')
	if e.Flags == 0 {
		b = append(b, '-')
	} else {
		b = e.Flags.appendTo(b)
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesReceived, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Duration.Milliseconds(), 10)
	b = append(b, ' ')
	if e.UpstreamServiceTime >= 0 && !e.TCP {
		b = strconv.AppendInt(b, e.UpstreamServiceTime.Milliseconds(), 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	b = appendQuoted(b, e.ForwardedFor)
	b = append(b, ' ')
	b = appendQuoted(b, e.UserAgent)
	b = append(b, ' ')
	b = appendQuoted(b, e.RequestID)
	b = append(b, ' ')
	b = appendQuoted(b, e.Authority)
	b = append(b, ' ')
	b = appendQuoted(b, e.UpstreamHost)
	return append(b, '\n')
}

// Log writes one entry in the logger's format.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	l.LogFormat(l.format, e)
}

// LogFormat writes one entry in format f (nil: Envoy's default).
func (l *Logger) LogFormat(f *Compiled, e *Entry) {
	if l == nil {
		return
	}
	bp := bufPool.Get().(*[]byte)
	var b []byte
	if f == nil {
		b = Format((*bp)[:0], e)
	} else {
		sp := bufPool.Get().(*[]byte)
		var scratch []byte
		b, scratch = f.Append((*bp)[:0], e, (*sp)[:0])
		*sp = scratch
		bufPool.Put(sp)
	}
	l.mu.Lock()
	l.w.Write(b)
	l.mu.Unlock()
	*bp = b
	bufPool.Put(bp)
}
