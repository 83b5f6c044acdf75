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
	log logr.Logger
	mu  sync.Mutex
	// last is the last update's statuses, in its order; a status is
	// compared with the one in its own place there first, and looked up
	// by key (index, made then) only when that is another resource's:
	// from one update to the next the list keeps its order but for what
	// changed, and a map of tens of thousands of keys written and read
	// on every update cost more than the comparisons.
	last, spare []*status.Status
	index       map[resource.Key]int // positions in last, or nil
}

// NewLogSink returns a sink logging to log.
func NewLogSink(log logr.Logger) *LogSink {
	return &LogSink{log: log}
}

// previous returns the last update's status of key, which is expected at
// position i.
func (s *LogSink) previous(i int, key resource.Key) *status.Status {
	if i < len(s.last) && s.last[i].Key == key {
		return s.last[i]
	}
	if s.index == nil {
		s.index = make(map[resource.Key]int, len(s.last))
		for j, st := range s.last {
			s.index[st.Key] = j
		}
	}
	if j, ok := s.index[key]; ok {
		return s.last[j]
	}
	return nil
}

// Update implements StatusSink.
func (s *LogSink) Update(_ context.Context, result *gateway.Result) {
	statuses := result.Statuses
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range statuses {
		old := s.previous(i, st.Key)
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
	// A copy: the result's list is its owner's.
	s.last, s.spare = append(s.spare[:0], statuses...), s.last
	clear(s.spare)
	s.index = nil
}
