package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockPath serializes benchmark runs on one machine: two runs at once share the
// two CPUs and distort each other's figures.
const lockPath = "/tmp/xedge-bench.lock"

// acquireRunLock takes an exclusive flock on lockPath, waiting (bounded by wait and
// ctx) while another run holds it. The returned function releases it.
func acquireRunLock(ctx context.Context, wait time.Duration, log *slog.Logger) (func(), error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Close()
			return nil, fmt.Errorf("another benchmark run holds %s (%s): %w", lockPath, holder(), err)
		}
		if i%30 == 0 {
			log.Info("waiting for another benchmark run to finish", "lock", lockPath, "holder", holder())
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" "+strings.Join(os.Args, " ")+"\n"), 0)
	return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

func holder() string {
	b, err := os.ReadFile(lockPath)
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
