package offline

import (
	"context"
	"testing"
	"time"

	"xedge/xmppd/mod/internal/modtest"
)

// DeleteOlder deletes the messages stored before the cutoff, of every user,
// and keeps the younger ones (which a login then delivers).
func TestDeleteOlder(t *testing.T) {
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(100)
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	m.now = func() time.Time { return now.Add(-72 * time.Hour) }
	h.Route(ctx, msg("chat", "three days old"))
	m.now = func() time.Time { return now.Add(-47 * time.Hour) }
	h.Route(ctx, msg("chat", "two days old"))
	m.now = func() time.Time { return now }
	h.Route(ctx, msg("chat", "fresh"))
	if n := m.Count("alice"); n != 3 {
		t.Fatalf("stored %d, want 3", n)
	}
	if n, err := m.DeleteOlder(ctx, now.Add(-100*time.Hour)); err != nil || n != 0 {
		t.Fatalf("DeleteOlder 100h: %d %v, want 0", n, err)
	}
	if n, err := m.DeleteOlder(ctx, now.Add(-48*time.Hour)); err != nil || n != 1 {
		t.Fatalf("DeleteOlder 2 days: %d %v, want 1", n, err)
	}
	if n := m.Count("alice"); n != 2 {
		t.Fatalf("left %d, want 2", n)
	}
	a := h.Connect("alice@example.org/a")
	m.Deliver(ctx, a)
	var bodies []string
	for _, e := range modtest.Find(a.Take(), "message", "") {
		bodies = append(bodies, e.ChildText("", "body"))
	}
	if len(bodies) != 2 || bodies[0] != "two days old" || bodies[1] != "fresh" {
		t.Fatalf("delivered %q", bodies)
	}
}
