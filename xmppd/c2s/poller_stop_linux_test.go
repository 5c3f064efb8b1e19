package c2s

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A clean stop logs no error: closing the epoll descriptor on purpose is not an
// epoll_wait failure (it logged "epoll_wait failed ... use of closed file" on
// every SIGTERM).
func TestPollerStopLogsNoError(t *testing.T) {
	var buf lockedBuf
	p, err := newPoller(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	p.stop()
	if s := buf.String(); strings.Contains(s, "level=ERROR") || strings.Contains(s, "epoll_wait failed") {
		t.Fatalf("clean stop logged an error:\n%s", s)
	}
}
