package local

import (
	"testing"

	"go.uber.org/goleak"
)

// Every store a test starts must stop its goroutines (retry loop, snapshots).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
