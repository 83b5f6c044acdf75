package accesslog

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Target is one configured access logger: where and in which format.
type Target struct {
	// Path is the file FileAccessLog names; "" is the stdout logger.
	// "" and "/dev/stdout" both go to the proxy's access log destination
	// (--access-log), so "--access-log off" silences them.
	Path string
	// Format is the compiled format; nil is Envoy's default.
	Format *Compiled
	// RespHeaders are the response headers the format reads.
	RespHeaders []string
	// Filter, when set, decides per entry whether it is logged.
	Filter *Filter
}

// Bound is a target resolved to its writer.
type Bound struct {
	L      *Logger
	F      *Compiled
	Filter *Filter
}

// Log writes e to the bound logger, unless the filter says no.
func (b *Bound) Log(e *Entry) {
	if b.Filter != nil && !b.Filter.Match(e) {
		return
	}
	b.L.LogFormat(b.F, e)
}

// Sinks owns the proxy's access log writers: the default destination
// and every file a listener names, each opened once and shared by every
// listener that names it.
type Sinks struct {
	def   *Logger // nil: off
	mu    sync.Mutex
	files map[string]*Logger
	close []io.Closer
}

// NewSinks returns sinks whose default destination is def (nil: off).
func NewSinks(def io.Writer) *Sinks {
	s := &Sinks{files: map[string]*Logger{}}
	if def != nil {
		s.def = New(def)
	}
	return s
}

// Default is the default destination's logger (nil: off).
func (s *Sinks) Default() *Logger {
	if s == nil {
		return nil
	}
	return s.def
}

// Logger returns the logger for a path, opening the file on first use.
func (s *Sinks) Logger(path string) (*Logger, error) {
	if path == "" || path == "/dev/stdout" {
		return s.def, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.files[path]; ok {
		return l, nil
	}
	var w io.Writer
	if path == "/dev/stderr" {
		w = os.Stderr
	} else {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening access log file: %w", err)
		}
		s.close = append(s.close, f)
		w = f
	}
	l := New(w)
	s.files[path] = l
	return l, nil
}

// Resolve binds targets to loggers. A file that cannot be opened is
// reported on log and skipped: the listener keeps serving.
func (s *Sinks) Resolve(targets []Target, log logr.Logger) []Bound {
	if s == nil {
		return nil
	}
	var out []Bound
	for _, t := range targets {
		l, err := s.Logger(t.Path)
		if err != nil {
			log.Error(err, "access log disabled for this listener", "path", t.Path)
			continue
		}
		if l != nil {
			out = append(out, Bound{L: l, F: t.Format, Filter: t.Filter})
		}
	}
	return out
}

func (s *Sinks) all() []*Logger {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Logger, 0, len(s.files)+1)
	if s.def != nil {
		out = append(out, s.def)
	}
	for _, l := range s.files {
		out = append(out, l)
	}
	return out
}

// Flush writes every buffered entry.
func (s *Sinks) Flush() {
	if s == nil {
		return
	}
	for _, l := range s.all() {
		l.Flush()
	}
}

// Run flushes every interval until ctx ends, then flushes and closes the
// files it opened.
func (s *Sinks) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Flush()
			s.mu.Lock()
			for _, c := range s.close {
				c.Close()
			}
			s.close = nil
			s.mu.Unlock()
			return
		case <-t.C:
			s.Flush()
		}
	}
}
