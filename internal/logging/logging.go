// Package logging builds the logr loggers every binary uses (zap backend),
// with a level that can be changed at runtime (the proxy's /logging).
package logging

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logger is a logr.Logger with its adjustable level.
type Logger struct {
	logr.Logger
	Level zap.AtomicLevel
}

// New returns a logger writing to stderr at the given level ("debug",
// "info", "warn", "error"), as JSON or, with console, human-readable text.
func New(level string, console bool) (Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return Logger{}, err
	}
	atom := zap.NewAtomicLevelAt(lvl)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "time"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if console {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), atom)
	return Logger{Logger: zapr.NewLogger(zap.New(core)), Level: atom}, nil
}

// ParseLevel accepts zap's names plus Envoy's ("trace", "critical", "off").
func ParseLevel(s string) (zapcore.Level, error) {
	switch s {
	case "trace", "debug":
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
