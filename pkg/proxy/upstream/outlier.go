package upstream

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// outlierState is one host's outlier detection state.
type outlierState struct {
	ejected     atomic.Bool
	consec5xx   atomic.Uint32
	consecGW    atomic.Uint32
	consecLocal atomic.Uint32

	mu           sync.Mutex
	ejectedAt    time.Time
	numEjections int
	lastEjection time.Time
}

// Result is how an upstream attempt ended, for outlier detection.
type Result int

// Results.
const (
	// Success is any response below 500.
	Success Result = iota
	// ServerError is a 5xx response; Status says which.
	ServerError
	// LocalFailure is a connect failure, timeout or reset: an error the
	// proxy saw rather than one the upstream sent.
	LocalFailure
)

// Report records an attempt's outcome on a host and ejects it when a
// consecutive-error threshold is reached, as Envoy's outlier detector does
// (immediately, not at the next interval).
func (c *Cluster) Report(h *Host, r Result, status int) {
	if r == Success {
		h.success.Add(1)
	} else {
		h.errors.Add(1)
	}
	o := c.cfg.Outlier
	if o == nil || h.Ejected() {
		return
	}
	st := &h.outlier
	switch r {
	case Success:
		st.consec5xx.Store(0)
		st.consecGW.Store(0)
		st.consecLocal.Store(0)
		return
	case LocalFailure:
		if o.SplitLocalOrigin {
			if n := st.consecLocal.Add(1); n >= o.ConsecutiveLocalOrigin {
				c.Stats.DetectedLocal.Inc()
				c.maybeEject(h, o.EnforcingLocalOrigin, c.Stats.EnforcedLocal)
			}
			return
		}
		status = 503 // a local failure counts as a gateway error
	}
	n5 := st.consec5xx.Add(1)
	gw := status == 502 || status == 503 || status == 504
	var nGW uint32
	if gw {
		nGW = st.consecGW.Add(1)
	} else {
		st.consecGW.Store(0)
	}
	if n5 >= o.Consecutive5xx {
		c.Stats.Detected5xx.Inc()
		if c.maybeEject(h, o.Enforcing5xx, c.Stats.Enforced5xx) {
			return
		}
	}
	if gw && nGW >= o.ConsecutiveGateway {
		c.Stats.DetectedGateway.Inc()
		c.maybeEject(h, o.EnforcingGateway, c.Stats.EnforcedGateway)
	}
}

type counter interface{ Inc() }

func (c *Cluster) maybeEject(h *Host, enforcing uint32, enforced counter) bool {
	if enforcing == 0 || enforcing < 100 && rand.Uint32N(100) >= enforcing {
		return false
	}
	hs := c.hosts.Load()
	if hs == nil {
		return false
	}
	ejected := 0
	for _, x := range hs.all {
		if x.Ejected() {
			ejected++
		}
	}
	// max_ejection_percent, but at least one host may always be ejected.
	limit := max(1, int(c.cfg.Outlier.MaxEjectionPercent)*len(hs.all)/100)
	if ejected+1 > limit {
		c.Stats.EjectionsOverflow.Inc()
		return false
	}
	st := &h.outlier
	st.mu.Lock()
	if h.Ejected() {
		st.mu.Unlock()
		return false
	}
	st.numEjections++
	st.ejectedAt = time.Now()
	st.lastEjection = st.ejectedAt
	h.outlier.ejected.Store(true)
	st.consec5xx.Store(0)
	st.consecGW.Store(0)
	st.consecLocal.Store(0)
	st.mu.Unlock()
	c.Stats.EjectionsActive.Inc()
	c.Stats.EjectionsTotal.Inc()
	c.Stats.EjectionsEnforced.Inc()
	enforced.Inc()
	c.rebuild()
	// Its idle connections will not be used while it is ejected; they must
	// not hold the cluster's max_connections against the other hosts.
	c.closeIdle(h)
	return true
}

// runOutlier returns ejected hosts after base_ejection_time × the number of
// times they were ejected (capped by max_ejection_time), checking every
// interval, and decays the multiplier of hosts that stayed healthy.
func (c *Cluster) runOutlier() {
	o := c.cfg.Outlier
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case now := <-t.C:
			c.uneject(now)
		}
	}
}

func (c *Cluster) uneject(now time.Time) {
	o := c.cfg.Outlier
	hs := c.hosts.Load()
	if hs == nil {
		return
	}
	changed := false
	for _, h := range hs.all {
		st := &h.outlier
		st.mu.Lock()
		if h.Ejected() {
			d := min(o.BaseEjectionTime*time.Duration(st.numEjections), max(o.MaxEjectionTime, o.BaseEjectionTime))
			if now.Sub(st.ejectedAt) >= d {
				h.outlier.ejected.Store(false)
				c.Stats.EjectionsActive.Dec()
				changed = true
			}
		} else if st.numEjections > 0 && now.Sub(st.lastEjection) >= o.Interval {
			st.numEjections--
			st.lastEjection = now
		}
		st.mu.Unlock()
	}
	if changed {
		c.rebuild()
	}
}
