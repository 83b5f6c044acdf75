package translate_test

import (
	"os"
	"testing"

	"github.com/portico-gateway/portico/internal/fuzzbudget"
)

// TestMain bounds fuzz minimization (see internal/fuzzbudget): this
// package's fuzz inputs are large enough that the default never finishes.
func TestMain(m *testing.M) { os.Exit(fuzzbudget.Main(m)) }
