package replicated

import (
	"context"
	"testing"
	"time"

	"xedge/storage"
)

// A follower's forwarded batch whose reply is lost after the leader committed
// it is resent; the FSM recognises the request ID and answers with the first
// outcome, so a conditional batch does not report a spurious ErrConflict and
// is applied once.
func TestLostReplyIsNotAppliedTwice(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	l := c.waitLeader()
	f := c.follower(l)
	mustDeclare(t, f.s, "t", storage.Disc)
	mustDeclare(t, f.s, "r", storage.RAM)
	l.s.dropApplyReplies.Store(2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.s.Apply(ctx, storage.Put("t", "once", []byte("1")).If(storage.CondAbsent)); err != nil {
		t.Fatalf("conditional batch whose reply was lost: %v", err)
	}
	if err := f.s.Apply(ctx, storage.Put("r", "once", []byte("1")).If(storage.CondAbsent)); err != nil {
		t.Fatalf("conditional RAM batch whose reply was lost: %v", err)
	}
	if n := l.s.dropApplyReplies.Load(); n > 0 {
		t.Fatalf("%d replies were not dropped: the test did not exercise the resend", n)
	}
	if v, ok := get(t, f.s, "t", "once"); !ok || v != "1" {
		t.Fatalf("t/once = %q %v", v, ok)
	}
	// The duplicate did not apply again: a later conditional write still
	// sees exactly one earlier write.
	if err := f.s.Apply(ctx, storage.Put("t", "once", []byte("2")).If(storage.CondAbsent)); err == nil {
		t.Fatal("CondAbsent on an existing key succeeded")
	}
	// The memory of requests survives a snapshot and restore.
	if err := l.s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	metas, _ := l.s.st.List()
	_, rc, err := l.s.st.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	fresh := newFSM()
	if err := fresh.Restore(rc); err != nil {
		t.Fatal(err)
	}
	l.s.fsm.mu.Lock()
	want := len(l.s.fsm.requests)
	l.s.fsm.mu.Unlock()
	if want < 2 || len(fresh.requests) != want {
		t.Fatalf("requests after restore: %d, want %d (>= 2)", len(fresh.requests), want)
	}
}
