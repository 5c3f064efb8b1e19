package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunLockNamesHolder: a second run gives up after its --lock-wait with a
// message naming the holder's PID; it gets the lock once the first releases it.
func TestRunLockNamesHolder(t *testing.T) {
	old := lockPath
	lockPath = filepath.Join(t.TempDir(), "bench.lock")
	t.Cleanup(func() { lockPath = old })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	unlock, err := acquireRunLock(ctx, 0, log)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = acquireRunLock(ctx, 1500*time.Millisecond, log)
	if err == nil {
		t.Fatal("second run got the lock")
	}
	if !strings.Contains(err.Error(), "held by PID "+strconv.Itoa(os.Getpid())+" since ") || !strings.Contains(err.Error(), "--lock-wait") {
		t.Errorf("error does not name the holder: %v", err)
	}
	if el := time.Since(start); el < time.Second || el > 10*time.Second {
		t.Errorf("gave up after %v, want ~1.5s", el)
	}
	unlock()
	unlock2, err := acquireRunLock(ctx, time.Second, log)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	unlock2()
}
