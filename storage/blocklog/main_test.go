package blocklog

import (
	"testing"

	"go.uber.org/goleak"
)

// No test leaves goroutines behind (raft included).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
