package listener

import (
	"os"
	"testing"

	"github.com/portico-gateway/portico/internal/fuzzbudget"
)

// TestMain bounds fuzz minimization (see internal/fuzzbudget): ClientHellos
// are hundreds of bytes, which the default minimizer cannot finish.
func TestMain(m *testing.M) { os.Exit(fuzzbudget.Main(m)) }
