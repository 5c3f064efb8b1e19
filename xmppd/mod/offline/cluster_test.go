package offline

import (
	"context"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/xmlstream"
)

// clusteredHost is a modtest host that says it routes between nodes.
type clusteredHost struct{ *modtest.Host }

func (clusteredHost) Clustered() bool { return true }

// In a cluster, another node may store a message for a user after the user's
// new session (here) flushed the stored ones: it had not seen the session's
// row yet. The late flush delivers it without waiting for the next login.
func TestLateFlushInCluster(t *testing.T) {
	lateFlushDelay = 50 * time.Millisecond
	defer func() { lateFlushDelay = time.Second }()
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(10)
	ctx := context.Background()
	if err := m.Start(ctx, clusteredHost{h}); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	m.SetPresence(ctx, a, xmlstream.New(xmlstream.NSClient, "presence"))
	// "Another node" stores a message right after the flush.
	b := modutil.Encode(msg("chat", "late"))
	if err := h.Store().Apply(ctx, storage.Put(Table, modutil.Key("alice", "0000000000000001"), b)); err != nil {
		t.Fatal(err)
	}
	waitLate(t, a, "the message stored after the flush")
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d messages left in storage", n)
	}
}

// lagClusteredHost is a clustered node whose reads of the offline table lag
// the writes other nodes commit (a raft follower).
type lagClusteredHost struct {
	clusteredHost
	st *modtest.LagStore
}

func (h lagClusteredHost) Store() storage.Store { return h.st }

// Another node stored a message for alice before her session's late flush
// here, but this node has not applied the write by then (a loaded follower
// applies late): the late flush catches up with the cluster first
// (storage.CatchUp) and delivers it. Before, it looked once at the lagging
// table and the message waited for the next login.
func TestLateFlushCatchesUpFirst(t *testing.T) {
	lateFlushDelay = 50 * time.Millisecond
	defer func() { lateFlushDelay = time.Second }()
	h := modtest.NewHost("example.org", "alice", "bob")
	ls := &modtest.LagStore{Store: h.Store(), Lagging: []string{Table}}
	m := New(10)
	ctx := context.Background()
	if err := m.Start(ctx, lagClusteredHost{clusteredHost{h}, ls}); err != nil {
		t.Fatal(err)
	}
	ls.CatchUp()
	a := h.Connect("alice@example.org/a")
	m.SetPresence(ctx, a, xmlstream.New(xmlstream.NSClient, "presence"))
	// "Another node" commits a message right after the flush; this node's
	// view does not have it.
	if err := h.Store().Apply(ctx, storage.Put(Table, modutil.Key("alice", "0000000000000001"), modutil.Encode(msg("chat", "late")))); err != nil {
		t.Fatal(err)
	}
	waitLate(t, a, "the message committed elsewhere before the late flush")
}

// waitLate waits until session a got the chat message "late" (what), once.
// The late flush runs 50 ms after the session's; the bound is for a loaded
// machine (a CI rehearsal at load 30 missed 2 s), the loop ends as soon as
// the message is there.
func waitLate(t *testing.T, a *modtest.Session, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if got := modtest.Find(a.Take(), "message", "chat"); len(got) == 1 {
			if got[0].ChildText("", "body") != "late" {
				t.Fatalf("delivered %s", got[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not delivered", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
