package jwtauthn

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// DefaultCacheSize bounds the verified tokens one filter instance keeps.
const DefaultCacheSize = 4096

// maxCachedToken keeps oversized tokens out of the cache, as Envoy's
// jwt_max_token_size (4 KiB) does.
const maxCachedToken = 4096

// cache holds verified tokens by the hash of their bytes until they
// expire (Envoy's jwt_cache): the second request with a token costs a hash
// and a lookup instead of a signature check. Entries are only ever
// successful verifications, checked against the full token on lookup, and
// the cache lives and dies with the configuration (a JWKS change builds a
// new filter, so a removed key cannot keep a token valid).
type cache struct {
	mu      sync.RWMutex
	max     int
	entries map[uint64]*verified
}

func newCache(max int) *cache { return &cache{max: max, entries: map[uint64]*verified{}} }

func (c *cache) get(token string) *verified {
	h := xxhash.Sum64String(token)
	c.mu.RLock()
	v := c.entries[h]
	c.mu.RUnlock()
	if v == nil || v.token != token {
		return nil
	}
	return v
}

func (c *cache) put(v *verified) {
	if len(v.token) > maxCachedToken {
		return
	}
	h := xxhash.Sum64String(v.token)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Full: drop an arbitrary entry (map order is randomised), so a
		// flood of distinct valid tokens costs verifications, not memory.
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[h] = v
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
