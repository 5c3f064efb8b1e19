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
var lockPath = "/tmp/xedge-bench.lock"

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
			return nil, fmt.Errorf("benchmark lock %s still held after waiting %v (--lock-wait): %s; "+
				"runs are serialized because two at once share the 2 CPUs: rerun when it has finished, "+
				"or raise --lock-wait: %w", lockPath, wait, holder(), err)
		}
		if i%30 == 0 {
			log.Info("waiting for another benchmark run to finish", "lock", lockPath, "holder", holder(), "max_wait", wait)
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

// holder describes the run holding the lock from what it wrote there ("PID
// command line") and the lock file's time: "held by PID 123 since 02:41:09 UTC
// (go run ./bench/cmd/bench --quick)".
func holder() string {
	b, err := os.ReadFile(lockPath)
	if err != nil {
		return "holder unknown: " + err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200]
	}
	pid, cmd, _ := strings.Cut(s, " ")
	desc := "held by PID " + pid
	if _, err := strconv.Atoi(pid); err != nil || pid == "" {
		desc = "held by a process that did not record its PID"
	} else if _, err := os.Stat("/proc/" + pid); err != nil {
		desc += " (no such process now: the lock belongs to its child or was just released)"
	}
	if st, err := os.Stat(lockPath); err == nil {
		desc += " since " + st.ModTime().UTC().Format("15:04:05 UTC")
	}
	if cmd != "" {
		desc += " (" + cmd + ")"
	}
	return desc
}
