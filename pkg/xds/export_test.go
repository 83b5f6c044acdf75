package xds

// Memo names the memo for tests that thread it through builds.
type Memo = memo
