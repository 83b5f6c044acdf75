package router

import (
	"os"
	"testing"

	"github.com/portico-gateway/portico/internal/fuzzbudget"
)

// TestMain bounds fuzz minimization (see internal/fuzzbudget): without it
// FuzzVirtualHost spends most of a run minimizing grown host names and
// reports almost nothing.
func TestMain(m *testing.M) { os.Exit(fuzzbudget.Main(m)) }
