// Package logging builds the logr loggers every binary uses (zap backend),
// with levels that can be changed at runtime per named logger, as Envoy's
// /logging does: "router" at debug while everything else stays at info.
package logging

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logger is a logr.Logger with its adjustable levels.
type Logger struct {
	logr.Logger
	Levels *Levels
}

// TraceLevel is below debug: logr's V(2), where chatty libraries such as
// go-control-plane's cache log every watch.
const TraceLevel = zapcore.DebugLevel - 1

// New returns a logger writing to stderr at the given level ("trace",
// "debug", "info", "warning", "error"), as JSON or, with console,
// human-readable text.
func New(level string, console bool) (Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return Logger{}, err
	}
	levels := NewLevels(lvl)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "time"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if console {
		encCfg.EncodeLevel = levelEncoder(zapcore.CapitalLevelEncoder, "TRACE")
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		encCfg.EncodeLevel = levelEncoder(zapcore.LowercaseLevelEncoder, "trace")
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := levels.Core(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zap.LevelEnablerFunc(func(zapcore.Level) bool { return true })))
	return Logger{Logger: zapr.NewLogger(zap.New(core)), Levels: levels}, nil
}

func levelEncoder(base zapcore.LevelEncoder, trace string) zapcore.LevelEncoder {
	return func(l zapcore.Level, enc zapcore.PrimitiveArrayEncoder) {
		if l < zapcore.DebugLevel {
			enc.AppendString(trace)
			return
		}
		base(l, enc)
	}
}

// ParseLevel accepts zap's names plus Envoy's ("trace", "critical", "off").
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return TraceLevel, nil
	case "debug":
		return zapcore.DebugLevel, nil
	case "", "info":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error", "err":
		return zapcore.ErrorLevel, nil
	case "critical", "off":
		return zapcore.FatalLevel, nil
	}
	return zapcore.InfoLevel, fmt.Errorf("unknown log level %q (trace, debug, info, warning, error, critical, off)", s)
}

// LevelName is the name ParseLevel reads back, in Envoy's spelling.
func LevelName(l zapcore.Level) string {
	switch {
	case l < zapcore.DebugLevel:
		return "trace"
	case l == zapcore.DebugLevel:
		return "debug"
	case l == zapcore.InfoLevel:
		return "info"
	case l == zapcore.WarnLevel:
		return "warning"
	case l == zapcore.ErrorLevel:
		return "error"
	}
	return "critical"
}

// Levels holds a level per named logger and a default for every other
// logger. A logger is named by the last element of its logr name that is
// registered: "proxy.connection" is the "connection" logger, and so is
// "proxy.connection.tls" unless "tls" is registered too.
type Levels struct {
	mu    sync.RWMutex
	def   zapcore.Level
	named map[string]zapcore.Level
	// min is the lowest level of all, so a disabled V(1) call costs one
	// comparison.
	min atomic.Int32
	// resolved caches logger name → registered name ("" for default).
	resolved sync.Map
}

// NewLevels returns levels with every logger at def.
func NewLevels(def zapcore.Level) *Levels {
	l := &Levels{def: def, named: map[string]zapcore.Level{}}
	l.min.Store(int32(def))
	return l
}

// Register adds named loggers, each at the default level. Registering a
// name twice keeps its level.
func (l *Levels) Register(names ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		if _, ok := l.named[n]; !ok {
			l.named[n] = l.def
		}
	}
	l.resolved.Clear()
}

// ErrUnknownLogger is returned for a name that was not registered.
var ErrUnknownLogger = errors.New("unknown logger")

// SetLevel changes one named logger's level, or with name "" every
// logger's (and the default).
func (l *Levels) SetLevel(name, level string) error {
	lvl, err := ParseLevel(level)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if name == "" {
		l.def = lvl
		for n := range l.named {
			l.named[n] = lvl
		}
	} else {
		if _, ok := l.named[name]; !ok {
			return fmt.Errorf("%w %q; loggers: %s", ErrUnknownLogger, name, strings.Join(l.namesLocked(), ", "))
		}
		l.named[name] = lvl
	}
	lowest := l.def
	for _, v := range l.named {
		lowest = min(lowest, v)
	}
	l.min.Store(int32(lowest))
	return nil
}

// Levels returns every named logger's level, by name.
func (l *Levels) Levels() map[string]string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make(map[string]string, len(l.named))
	for n, v := range l.named {
		out[n] = LevelName(v)
	}
	return out
}

// Names lists the named loggers, sorted.
func (l *Levels) Names() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.namesLocked()
}

func (l *Levels) namesLocked() []string {
	out := make([]string, 0, len(l.named))
	for n := range l.named {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Default is the level of loggers that are not named.
func (l *Levels) Default() string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return LevelName(l.def)
}

// For returns the level that applies to a zap logger name.
func (l *Levels) For(loggerName string) zapcore.Level {
	named, ok := l.resolved.Load(loggerName)
	if !ok {
		named = l.resolve(loggerName)
		l.resolved.Store(loggerName, named)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if v, ok := l.named[named.(string)]; ok {
		return v
	}
	return l.def
}

func (l *Levels) resolve(loggerName string) string {
	parts := strings.Split(loggerName, ".")
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, p := range slices.Backward(parts) {
		if _, ok := l.named[p]; ok {
			return p
		}
	}
	return ""
}

// Core wraps a zap core (which must enable every level) so that each
// entry is checked against its logger's level.
func (l *Levels) Core(inner zapcore.Core) zapcore.Core { return &levelCore{Core: inner, levels: l} }

type levelCore struct {
	zapcore.Core
	levels *Levels
}

func (c *levelCore) Enabled(lvl zapcore.Level) bool { return lvl >= zapcore.Level(c.levels.min.Load()) }

func (c *levelCore) With(fields []zapcore.Field) zapcore.Core {
	return &levelCore{Core: c.Core.With(fields), levels: c.levels}
}

func (c *levelCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Level >= c.levels.For(e.LoggerName) {
		return ce.AddCore(e, c)
	}
	return ce
}
