package controller

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// LogSink reports statuses in the log, once per change: standalone mode has
// no API server to write them to (they are also on /debug/status).
type LogSink struct {
	log   logr.Logger
	mu    sync.Mutex
	last  map[resource.Key]*logged
	epoch uint64
}

// logged is the status last logged for a resource, and the last update
// that had one (older entries are forgotten: no set of every key is
// built per update, which at tens of thousands of resources cost more
// than the comparisons).
type logged struct {
	st    *status.Status
	epoch uint64
}

// NewLogSink returns a sink logging to log.
func NewLogSink(log logr.Logger) *LogSink {
	return &LogSink{log: log, last: map[resource.Key]*logged{}}
}

// Update implements StatusSink.
func (s *LogSink) Update(_ context.Context, result *gateway.Result) {
	statuses := result.Statuses
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	for _, st := range statuses {
		e := s.last[st.Key]
		if e == nil {
			e = &logged{}
			s.last[st.Key] = e
		}
		old := e.st
		e.st, e.epoch = st, s.epoch
		if old != nil && slices.Equal(old.Conditions, st.Conditions) && slices.Equal(old.Messages, st.Messages) {
			continue
		}
		acc := st.Condition(status.Accepted)
		kv := []any{"resource", st.Key.String(), "accepted", acc.Status, "reason", acc.Reason, "generation", st.ObservedGeneration}
		if len(st.Messages) == 0 {
			s.log.Info("status", kv...)
			continue
		}
		// Each message at its own level: an error in a resource is an
		// error in the log, so log filters and alerts see it.
		for _, m := range st.Messages {
			mkv := append(slices.Clip(kv), "code", m.Code.ID, "severity", string(m.Level), "field", m.Field)
			if m.Level == status.Error {
				s.log.Error(errors.New(m.Message), "status", mkv...)
				continue
			}
			s.log.Info("status", append(mkv, "message", m.Message)...)
		}
	}
	for k, e := range s.last {
		if e.epoch != s.epoch {
			delete(s.last, k)
		}
	}
}
