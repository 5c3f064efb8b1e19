package c2s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// A stanza handler gets the connection's context: it is cancelled when the
// server closes the connection (here: a kick) or stops, so a handler waiting
// on it does not outlive the stream.
func TestHandlerContextEndsWithConnection(t *testing.T) {
	e := start(t, nil)
	entered := make(chan context.Context, 2)
	e.r.Hook(module.EvC2SIn, 0, func(ctx context.Context, _ module.Host, d *module.EventData) bool {
		if d.Stanza.Attr("to") != "block@localhost" {
			return false
		}
		entered <- ctx
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
		return true
	})
	c := e.login(t, "alice", "r")
	c.Send("<message to='block@localhost'><body>x</body></message>")
	var ctx context.Context
	select {
	case ctx = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	if ctx.Err() != nil {
		t.Fatal("context cancelled while the connection is open")
	}
	if _, err := e.r.Kick(jid.MustParse("alice@localhost/r"), "bye"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("handler context not cancelled after the connection was closed")
	}

	// Server stop cancels the context of a connection that is still open.
	c2 := e.login(t, "bob", "r")
	c2.Send("<message to='block@localhost'><body>y</body></message>")
	select {
	case ctx = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	go e.srv.Stop(context.Background())
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("handler context not cancelled by Stop")
	}
}

// fakeRepl records what c2s tells a Replicator.
type fakeRepl struct {
	mu      sync.Mutex
	puts    []SMState
	queued  map[uint32]string
	acked   uint32
	ended   []string
	syncs   int
	fetch   *SMState
	release chan struct{} // Sync waits for it when set
	// failSyncs: the next failSyncs Syncs fail (no peer confirmed).
	failSyncs int
}

func (f *fakeRepl) NewID() string { return "node1.xyz" }
func (f *fakeRepl) Put(st *SMState) {
	f.mu.Lock()
	f.puts = append(f.puts, *st)
	f.mu.Unlock()
}
func (f *fakeRepl) Queued(id string, seq uint32, st *xmlstream.Element) {
	f.mu.Lock()
	f.queued[seq] = string(xmlstream.AppendElement(nil, st, xmlstream.NSClient))
	f.mu.Unlock()
}
func (f *fakeRepl) Acked(id string, h uint32) { f.mu.Lock(); f.acked = h; f.mu.Unlock() }
func (f *fakeRepl) Ended(id string)           { f.mu.Lock(); f.ended = append(f.ended, id); f.mu.Unlock() }
func (f *fakeRepl) Fetch(ctx context.Context, id, user string) (*SMState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fetch == nil || f.fetch.ID != id {
		return nil, ErrNoSession
	}
	st := f.fetch
	f.fetch = nil
	return st, nil
}
func (f *fakeRepl) Sync(ctx context.Context) error {
	f.mu.Lock()
	f.syncs++
	rel := f.release
	if f.failSyncs > 0 {
		f.failSyncs--
		f.mu.Unlock()
		return errors.New("resume: no peer confirmed")
	}
	f.mu.Unlock()
	if rel != nil {
		select {
		case <-rel:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
func (f *fakeRepl) Replicated() bool { return true }

func (f *fakeRepl) lock() func() { f.mu.Lock(); return f.mu.Unlock }

// The c2s side of replicated resumption: the id comes from the replicator,
// every queued stanza and ack is recorded, <a/> waits for Sync, a session not
// held here is fetched and resumed with its queue, and Handover gives a
// session away without announcing it unavailable.
func TestReplicatorHooks(t *testing.T) {
	f := &fakeRepl{queued: map[uint32]string{}, release: make(chan struct{})}
	e := start(t, nil)
	e.srv.SetReplicator(f)
	alice := e.login(t, "alice", "a")
	bob := e.login(t, "bob", "r")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	if en := bob.Expect("/>", 5*time.Second); !strings.Contains(en, "id='node1.xyz'") {
		t.Fatalf("enable: %s", en)
	}
	alice.Send("<message to='bob@localhost/r' id='m1'><body>one</body></message>")
	bob.Expect("<body>one</body>", 5*time.Second)
	waitFor(t, "queued", func() bool { defer f.lock()(); return strings.Contains(f.queued[1], "one") })
	bob.Send("<a xmlns='urn:xmpp:sm:3' h='1'/><r xmlns='urn:xmpp:sm:3'/>")
	if got, err := bob.ReadUntil("<a xmlns", 500*time.Millisecond); err == nil {
		t.Fatalf("<a/> before the replicator confirmed: %s", got)
	}
	close(f.release)
	bob.Expect("<a xmlns='urn:xmpp:sm:3' h='0'/>", 5*time.Second)
	waitFor(t, "acked", func() bool { defer f.lock()(); return f.acked == 1 })

	// A session held elsewhere: fetched, resumed with h and the unacked queue.
	m5 := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", "bob@localhost/x", "id", "q5")
	m5.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("five"))
	m6 := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", "bob@localhost/x", "id", "q6")
	m6.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("six"))
	f.mu.Lock()
	f.fetch = &SMState{ID: "node2.abc", JID: jid.MustParse("bob@localhost/x"), HIn: 7, OutCount: 6, Queue: []*xmlstream.Element{m5, m6}}
	f.mu.Unlock()
	bx := testenvDial(t, e)
	bx.Send("<resume xmlns='urn:xmpp:sm:3' previd='node2.abc' h='5'/>")
	got := bx.Expect("<body>six</body>", 5*time.Second)
	if !strings.Contains(got, "<resumed") || !strings.Contains(got, "h='7'") || strings.Contains(got, "five") {
		t.Fatalf("resume from another node: %s", got)
	}
	waitFor(t, "bound", func() bool { return e.r.Session(jid.MustParse("bob@localhost/x")) != nil })
	alice.Send("<message to='bob@localhost/x' id='m7'><body>seven</body></message>")
	bx.Expect("<body>seven</body>", 5*time.Second)
	waitFor(t, "re-recorded", func() bool { defer f.lock()(); return strings.Contains(f.queued[7], "seven") })

	// An unknown id fails.
	by := testenvDial(t, e)
	by.Send("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>")
	if got := by.Expect("</failed>", 5*time.Second); !strings.Contains(got, "item-not-found") {
		t.Fatalf("unknown previd: %s", got)
	}

	// Handover: the session leaves this node with its queue, quietly.
	st, err := e.srv.Handover(context.Background(), "node2.abc", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if st.JID.Resource != "x" || st.HIn != 7 || st.OutCount != 7 || len(st.Queue) != 2 {
		t.Fatalf("handover state: %+v", st)
	}
	if e.r.Session(jid.MustParse("bob@localhost/x")) != nil {
		t.Fatal("still bound after handover")
	}
	if !bx.Closed(5 * time.Second) {
		t.Fatal("the old connection stays open after handover")
	}
	if _, err := e.srv.Handover(context.Background(), "node2.abc", "bob"); err != ErrNoSession {
		t.Fatalf("second handover: %v", err)
	}
	f.mu.Lock()
	ended := append([]string(nil), f.ended...)
	f.mu.Unlock()
	if len(ended) != 1 || ended[0] != "node2.abc" {
		t.Fatalf("ended: %v", ended)
	}
}

// refusingRepl is a fakeRepl that records Refused.
type refusingRepl struct {
	*fakeRepl
	refused []string
}

func (r *refusingRepl) Refused(id string, j jid.JID, h uint32) {
	r.mu.Lock()
	r.refused = append(r.refused, fmt.Sprint(id, " ", j, " ", h))
	r.mu.Unlock()
}

// A session's state taken over from another node that is older than the
// client's own (its h says it received stanzas beyond the state's last: the
// copy missed the owner's last updates, its owner having been declared lost
// by mistake while it went on serving the session) is not resumed: <failed/>,
// so the client starts a new session and resends what it had not
// acknowledged, instead of a resumption that silently drops whatever the
// owner queued after the copy's last stanza. Before, the session was resumed
// and counted on from the client's h. A state that covers h resumes.
func TestResumeRefusedWhenStateOlderThanClient(t *testing.T) {
	f := &refusingRepl{fakeRepl: &fakeRepl{queued: map[uint32]string{}}}
	e := start(t, nil)
	e.srv.SetReplicator(f)
	m4 := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", "bob@localhost/x", "id", "q4")
	m4.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("four"))
	f.mu.Lock()
	f.fetch = &SMState{ID: "node2.abc", JID: jid.MustParse("bob@localhost/x"), HIn: 3, OutCount: 4, Queue: []*xmlstream.Element{m4}}
	f.mu.Unlock()
	c := testenvDial(t, e)
	c.Send("<resume xmlns='urn:xmpp:sm:3' previd='node2.abc' h='9'/>")
	if got := c.Expect("</failed>", 5*time.Second); !strings.Contains(got, "item-not-found") || strings.Contains(got, "<resumed") {
		t.Fatalf("resume with h=9 from a state whose last stanza is 4: %s", got)
	}
	if e.r.Session(jid.MustParse("bob@localhost/x")) != nil {
		t.Fatal("bound although the resumption was refused")
	}
	f.mu.Lock()
	refused := append([]string(nil), f.refused...)
	f.mu.Unlock()
	if len(refused) != 1 || refused[0] != "node2.abc bob@localhost/x 9" {
		t.Fatalf("Refused calls: %v", refused)
	}
	// The same state with h=3 covers the client: resumed, stanza 4 resent.
	f.mu.Lock()
	f.fetch = &SMState{ID: "node2.abc", JID: jid.MustParse("bob@localhost/x"), HIn: 3, OutCount: 4, Queue: []*xmlstream.Element{m4}}
	f.mu.Unlock()
	c2 := testenvDial(t, e)
	c2.Send("<resume xmlns='urn:xmpp:sm:3' previd='node2.abc' h='3'/>")
	if got := c2.Expect("<body>four</body>", 5*time.Second); !strings.Contains(got, "<resumed") {
		t.Fatalf("resume with h=3: %s", got)
	}
}

func testenvDial(t *testing.T, e *env) *testenv.Raw {
	c := testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	c.AuthPlain("localhost", "bob", "secret")
	return c
}

// An <a/> waits until another node confirmed the session's state: while Sync
// fails (peers exist, none confirms: a loaded or partitioned cluster) it is
// retried, not given up (the acknowledged stanzas would be lost with this
// node: seen in qemu scenario (b), client told h=158, the copy resumed had 133).
func TestAckWaitsForConfirmedState(t *testing.T) {
	f := &fakeRepl{queued: map[uint32]string{}, failSyncs: 2}
	e := start(t, nil)
	e.srv.SetReplicator(f)
	bob := e.login(t, "bob", "r")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	bob.Expect("/>", 5*time.Second)
	bob.Send("<r xmlns='urn:xmpp:sm:3'/>")
	bob.Expect("<a xmlns", 10*time.Second)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncs < 3 || f.failSyncs != 0 {
		t.Fatalf("<a/> after %d Syncs (%d failures left), want it after the third (the first two fail)", f.syncs, f.failSyncs)
	}
}

func TestStats(t *testing.T) {
	e := start(t, nil)
	bob := e.login(t, "bob", "r")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	bob.Expect("/>", 5*time.Second)
	m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", "bob@localhost/r")
	e.r.Route(context.Background(), m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("x")))
	bob.Expect("<body>x</body>", 5*time.Second)
	waitFor(t, "unacked", func() bool { s := e.srv.Stats(); return s.Conns == 1 && s.Unacked == 1 })
	bob.Drop()
	waitFor(t, "detached", func() bool { s := e.srv.Stats(); return s.Detached == 1 && s.Conns == 0 })
}
