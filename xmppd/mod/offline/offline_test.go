package offline

import (
	"context"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

func msg(typ, body string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "from", "bob@example.org/b", "to", "alice@example.org", "id", "m-"+body)
	m.SetAttr("type", typ)
	if body != "" {
		m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	}
	return m
}

func TestStoreDeliverAndCap(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(2)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := h.Connect("bob@example.org/b")
	h.Send(b, xmlstream.New(xmlstream.NSClient, "presence"))
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	b.Take()

	h.Route(ctx, msg("chat", "one"))
	h.Route(ctx, msg("", "two"))
	h.Route(ctx, msg("headline", "news")) // not stored: bounced by the host
	h.Route(ctx, msg("chat", ""))         // chat state without body: not stored
	h.Route(ctx, msg("chat", "three"))    // over the cap: service-unavailable
	if n := m.Count("alice"); n != 2 {
		t.Fatalf("stored %d, want 2", n)
	}
	errs := modtest.Find(b.Take(), "message", "error")
	if len(errs) != 1 || errs[0].Child("", "error").Child(module.NSStanzas, "service-unavailable") == nil {
		t.Fatalf("cap bounce: %+v", errs)
	}

	// Negative priority: nothing delivered.
	a := h.Connect("alice@example.org/a")
	p := xmlstream.New(xmlstream.NSClient, "presence").Append(xmlstream.New(xmlstream.NSClient, "priority").AppendText("-1"))
	h.Send(a, p)
	if len(a.Take()) != 0 {
		t.Fatal("delivered to a negative-priority session")
	}
	a.SetPresence(p)
	h.Send(a, xmlstream.New(xmlstream.NSClient, "presence").Append(xmlstream.New(xmlstream.NSClient, "priority").AppendText("-5")))
	if len(a.Take()) != 0 {
		t.Fatal("delivered on a negative-priority update")
	}
	a2 := h.Connect("alice@example.org/a2")
	h.Send(a2, xmlstream.New(xmlstream.NSClient, "presence"))
	got := modtest.Find(a2.Take(), "message", "")
	if len(got) != 2 || got[0].ChildText("", "body") != "one" || got[1].ChildText("", "body") != "two" {
		t.Fatalf("delivery: %+v", got)
	}
	d := got[0].Child(NSDelay, "delay")
	if d == nil || d.Attr("from") != "example.org" || d.Attr("stamp") == "" {
		t.Fatalf("delay stamp: %+v", d)
	}
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d left after delivery", n)
	}
	// A stored message reaches a session raising its priority to non-negative.
	h.Disconnect(a2)
	h.Route(ctx, msg("chat", "later"))
	h.Send(a, xmlstream.New(xmlstream.NSClient, "presence").Append(xmlstream.New(xmlstream.NSClient, "priority").AppendText("1")))
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "later" {
		t.Fatalf("delivery on priority raise: %+v", got)
	}
}

func TestUnavailableStorageBouncesWait(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(-1)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	b := h.Connect("bob@example.org/b")
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	defer func(d time.Duration) { UnavailableRetry = d }(UnavailableRetry)
	UnavailableRetry = 300 * time.Millisecond // still unavailable after the retries
	h.MemStore().SetFail(storage.ErrUnavailable)
	h.Route(context.Background(), msg("chat", "x"))
	errs := modtest.Find(b.Take(), "message", "error")
	if len(errs) != 1 || errs[0].Child("", "error").Attr("type") != "wait" {
		t.Fatalf("want a wait error, got %+v", errs)
	}
	h.MemStore().SetFail(nil)
	h.RemoveUser("alice")
}

func TestUserRemovedPurges(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(10)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	h.Route(context.Background(), msg("chat", "x"))
	h.RemoveUser("alice")
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d left", n)
	}
}

func TestStorableHints(t *testing.T) {
	withBody := msg("chat", "x")
	if !Storable(withBody) {
		t.Error("chat with body")
	}
	if Storable(msg("chat", "x").Append(xmlstream.New(NSHints, "no-store"))) {
		t.Error("no-store hint ignored")
	}
	if !Storable(msg("", "").Append(xmlstream.New(NSHints, "store"))) {
		t.Error("store hint ignored")
	}
	if Storable(msg("groupchat", "x").Append(xmlstream.New(NSHints, "store"))) {
		t.Error("groupchat stored")
	}
}

// With the presence module wired through PresenceSetter, a message the router
// found no session for, but whose recipient became available before it was stored,
// is routed live instead of being stored (it would stay in storage while the
// session is online: its flush has already run).
func TestStoreAfterBecomingAvailableRoutesLive(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(10)
	ctx := context.Background()
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	set := m.PresenceSetter()
	h.Route(ctx, msg("chat", "one")) // stored: nobody online
	a := h.Connect("alice@example.org/a")
	set(ctx, a, xmlstream.New(xmlstream.NSClient, "presence"))
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "one" {
		t.Fatalf("flush on becoming available: %+v", got)
	}
	// The router's decision "nobody available" was taken before the presence.
	if !h.Fire(ctx, module.EvOffline, &module.EventData{Stanza: msg("chat", "two"), To: a.JID().Bare()}) {
		t.Fatal("EvOffline not consumed")
	}
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "two" || got[0].Child(NSDelay, "delay") != nil {
		t.Fatalf("live delivery: %+v", got)
	}
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d stored while alice is available", n)
	}
	// A negative priority does not take bare-JID messages: stored, not flushed.
	set(ctx, a, xmlstream.New(xmlstream.NSClient, "presence").Append(xmlstream.New(xmlstream.NSClient, "priority").AppendText("-1")))
	h.Fire(ctx, module.EvOffline, &module.EventData{Stanza: msg("chat", "three"), To: a.JID().Bare()})
	if n := settledCount(m, "alice"); n != 1 || len(a.Take()) != 0 {
		t.Fatalf("negative priority: %d stored", n)
	}
	set(ctx, a, xmlstream.New(xmlstream.NSClient, "presence"))
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "three" {
		t.Fatalf("flush on priority raise: %+v", got)
	}
}

// A message for a user with no session while the store has no leader (the
// raft leader's node just died, as its sessions' messages are routed again) is
// stored once the store is back within UnavailableRetry, not bounced: the
// sender's server acknowledged it. (Seen in qemu scenario (b): four messages
// bounced with "storage: unavailable: no leader".)
func TestUnavailableStorageRetried(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(-1)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	b := h.Connect("bob@example.org/b")
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	h.MemStore().SetFail(storage.ErrUnavailable)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Route(context.Background(), msg("chat", "kept"))
	}()
	time.Sleep(300 * time.Millisecond) // a new leader is elected meanwhile
	h.MemStore().SetFail(nil)
	select {
	case <-done:
	case <-time.After(UnavailableRetry):
		t.Fatal("the store did not return within UnavailableRetry of the store's return")
	}
	if errs := modtest.Find(b.Take(), "message", "error"); len(errs) != 0 {
		t.Fatalf("bounced although the store came back: %+v", errs)
	}
	if n := m.Count("alice"); n != 1 {
		t.Fatalf("stored %d messages for alice, want 1", n)
	}
}

// gatedHost is a host whose store holds every write of an offline message until
// the gate opens (a raft store waiting for a new leader).
type gatedHost struct {
	*modtest.Host
	st gatedStore
}

func (h *gatedHost) Store() storage.Store { return &h.st }

type gatedStore struct {
	storage.Store
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) Apply(ctx context.Context, ops ...storage.Op) error {
	for _, op := range ops {
		if op.Table == Table && op.Kind == storage.OpPut {
			s.entered <- struct{}{}
			<-s.gate
		}
	}
	return s.Store.Apply(ctx, ops...)
}

// A session becoming available (a login, an XEP-0198 resumption) does not wait
// for an offline write in flight for its user, and gets the message once the
// write commits.
func TestStoreInFlightDoesNotHoldUpPresence(t *testing.T) {
	base := modtest.NewHost("example.org", "alice", "bob")
	h := &gatedHost{Host: base, st: gatedStore{Store: base.Store(), entered: make(chan struct{}, 1), gate: make(chan struct{})}}
	m := New(10)
	ctx := context.Background()
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	set := m.PresenceSetter()
	stored := make(chan bool, 1)
	go func() {
		stored <- m.store(ctx, h, &module.EventData{Stanza: msg("chat", "gap"), To: jid.MustParse("alice@example.org")})
	}()
	select {
	case <-h.st.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the offline write did not start")
	}
	a := base.Connect("alice@example.org/a")
	done := make(chan struct{})
	go func() { set(ctx, a, xmlstream.New(xmlstream.NSClient, "presence")); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		close(h.st.gate)
		t.Fatal("the presence of a session waited for an offline write of its user in flight")
	}
	close(h.st.gate)
	if !<-stored {
		t.Fatal("EvOffline not consumed")
	}
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "gap" {
		t.Fatalf("the message stored while the session became available: %+v", got)
	}
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d left in storage while alice is available", n)
	}
}

// deleteGatedStore holds every delete of offline messages until its gate opens
// (a raft store waiting for a new leader after the leader's node died).
type deleteGatedStore struct {
	storage.Store
	entered chan struct{}
	gate    chan struct{}
}

func (s *deleteGatedStore) Apply(ctx context.Context, ops ...storage.Op) error {
	for _, op := range ops {
		if op.Table == Table && op.Kind == storage.OpDelete {
			select {
			case s.entered <- struct{}{}:
			default:
			}
			<-s.gate
			break
		}
	}
	return s.Store.Apply(ctx, ops...)
}

type deleteGatedHost struct {
	*modtest.Host
	st deleteGatedStore
}

func (h *deleteGatedHost) Store() storage.Store { return &h.st }

// A session that becomes available gets its stored messages and is available at
// once, although their delete waits for the store: an XEP-0198 session resumed
// on a survivor right after the raft leader's node died stayed unavailable until
// a new leader was elected (its presence waited behind the flush's delete under
// the user's lock), so every message to the user meanwhile went to offline storage
// and waited on that lock too — in qemu scenario (b) bob's messages reached the
// resumed alice ~4 s after the resume ("offline: delivered messages not deleted …
// no leader" just before "session resumed from another node"). A flush while the
// delete is pending sends nothing again; the messages are gone once it commits.
func TestFlushDeleteDoesNotHoldUpPresence(t *testing.T) {
	base := modtest.NewHost("example.org", "alice", "bob")
	h := &deleteGatedHost{Host: base, st: deleteGatedStore{Store: base.Store(), entered: make(chan struct{}, 1), gate: make(chan struct{})}}
	m := New(10)
	ctx := context.Background()
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx)
	set := m.PresenceSetter()
	h.Route(ctx, msg("chat", "one")) // stored: nobody online
	if n := m.Count("alice"); n != 1 {
		t.Fatalf("stored %d", n)
	}
	a := base.Connect("alice@example.org/a")
	done := make(chan struct{})
	go func() { set(ctx, a, xmlstream.New(xmlstream.NSClient, "presence")); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		close(h.st.gate)
		<-done
		t.Fatal("the session's presence waited for the delete of its flushed messages")
	}
	if a.Presence() == nil {
		t.Fatal("the session is not available after its initial presence")
	}
	if got := modtest.Find(a.Take(), "message", ""); len(got) != 1 || got[0].ChildText("", "body") != "one" {
		t.Fatalf("flush: %+v", got)
	}
	// A message now goes live, without waiting for the delete.
	routed := make(chan struct{})
	go func() {
		m.store(ctx, h, &module.EventData{Stanza: msg("chat", "two"), To: jid.MustParse("alice@example.org")})
		close(routed)
	}()
	select {
	case <-routed:
	case <-time.After(2 * time.Second):
		close(h.st.gate)
		t.Fatal("a message to the available user waited for the delete")
	}
	// Another flush while the delete is pending sends nothing again.
	m.Deliver(ctx, a)
	got := modtest.Find(a.Take(), "message", "")
	if len(got) != 1 || got[0].ChildText("", "body") != "two" {
		t.Fatalf("after the flush, with the delete pending: %+v (want only 'two', live)", got)
	}
	select {
	case <-h.st.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the delete of the flushed messages never started")
	}
	close(h.st.gate)
	deadline := time.Now().Add(5 * time.Second)
	for m.Count("alice") != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := settledCount(m, "alice"); n != 0 {
		t.Fatalf("%d left in storage after the delete committed", n)
	}
}

// settledCount is Count once the deletes of delivered messages in flight (they
// run outside the user's lock) are done.
func settledCount(m *Module, user string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.Settle(ctx)
	return m.Count(user)
}

// A message being stored while the store has no leader is kept when the stream
// that carried it ends meanwhile (its context canceled): its sender was told it
// was received. In qemu scenario (c) 33 acknowledged messages bounced with
// "offline message not stored ... storage: unavailable: context canceled" while
// their sender's client resumed on another node.
func TestStoreOutlivesTheSendersStream(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(-1)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	b := h.Connect("bob@example.org/b")
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	h.MemStore().SetFail(storage.ErrUnavailable)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Route(ctx, msg("chat", "kept"))
	}()
	time.Sleep(200 * time.Millisecond)
	cancel() // the sender's stream ends
	time.Sleep(200 * time.Millisecond)
	h.MemStore().SetFail(nil) // a new leader
	select {
	case <-done:
	case <-time.After(UnavailableRetry + 10*time.Second):
		t.Fatal("the store did not finish")
	}
	if errs := modtest.Find(b.Take(), "message", "error"); len(errs) != 0 {
		t.Fatalf("bounced: %+v", errs)
	}
	if n := m.Count("alice"); n != 1 {
		t.Fatalf("stored %d messages for alice, want 1", n)
	}
}
