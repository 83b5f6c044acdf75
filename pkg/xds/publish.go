package xds

import (
	"fmt"

	"github.com/portico-gateway/portico/pkg/translate"
)

// Prepared is a class's snapshot versioned and validated but not yet
// published: the controller checks every class before it publishes any,
// so that it can leave out resources that break Envoy's rules and try
// again (see InvalidError).
type Prepared struct {
	class string
	snap  *Snapshot
	next  *memo
}

// Snapshot is the prepared snapshot.
func (p *Prepared) Snapshot() *Snapshot { return p.snap }

// Prepare versions and validates resources for a class, as Publish does,
// without publishing them. The error wraps an *InvalidError when messages
// break Envoy's validation rules. Preparing has no effect on the server:
// only Commit does.
func (s *Server) Prepare(class string, res *translate.Resources) (*Prepared, error) {
	s.mu.Lock()
	prev := s.memos[class]
	s.mu.Unlock()
	snap, next, err := NewSnapshot(res, prev)
	if err != nil {
		return nil, fmt.Errorf("class %s: %w", class, err)
	}
	return &Prepared{class: class, snap: snap, next: next}, nil
}
