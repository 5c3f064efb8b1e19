package replicated

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// Raft's transport logs the connections this node closed itself (on stop) at
// error level; they must not reach the log as ERROR, while real errors do.
func TestHCLogClosedConnectionIsNotAnError(t *testing.T) {
	var buf bytes.Buffer
	h := newHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	h.Error("failed to decode incoming command", "error", closed)
	if strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("a locally closed connection logged as an error:\n%s", buf.String())
	}
	// A connection handler still reading when the transport shut down (it
	// logged after its test had ended, which panics the test binary).
	h.Error("failed to decode incoming command", "error", raft.ErrTransportShutdown)
	if strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("the local transport shutdown logged as an error:\n%s", buf.String())
	}
	h.Error("failed to decode incoming command", "error", fmt.Errorf("read tcp: %w", net.UnknownNetworkError("reset by peer")))
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("a real error was hidden:\n%s", buf.String())
	}
}
