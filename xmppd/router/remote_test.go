package router

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/storage/ephemeral"
	"xedge/xmppd/accounts"
	"xedge/xmppd/cluster"
	"xedge/xmppd/cluster/clustertest"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// nodeStore is one node's view: shared durable tables, its own ephemeral set.
type nodeStore struct {
	*memstore.Store
	set *ephemeral.Set
}

func (s nodeStore) Ephemeral(name string) storage.Ephemeral { return s.set.Table(name) }

type twoNodes struct {
	r1, r2       *Router
	b1, b2       *cluster.Bus
	set1, set2   *ephemeral.Set
	addrs        map[string]string
	mu           sync.Mutex
	offline      []string
	closedEvents []string
	// mk starts one more node's router and bus (see addNode).
	mk func(node string, inc uint64, set *ephemeral.Set, tr *clustertest.Transport) (*Router, *cluster.Bus)
}

// addNode starts node (incarnation inc) whose rows stream to and from node1's
// at once (node2 does not see them) and whose bus node1 reaches.
func (tn *twoNodes) addNode(t *testing.T, node string, inc uint64) (*Router, *ephemeral.Set) {
	set := ephemeral.New(node, inc)
	set.OnLocalChange(func(c ephemeral.Change) { tn.set1.Merge(c) })
	tr := clustertest.New(t)
	tn.mu.Lock()
	tn.addrs[node] = tr.Addr()
	tn.mu.Unlock()
	r, _ := tn.mk(node, inc, set, tr)
	return r, set
}

// setupTwo builds two routers ("n1", "n2") whose ephemeral rows stream to each
// other at once and whose buses talk over loopback TCP.
func setupTwo(t *testing.T) *twoNodes {
	ctx := context.Background()
	mem := memstore.New("shared")
	tn := &twoNodes{set1: ephemeral.New("n1", 1), set2: ephemeral.New("n2", 2)}
	tn.set1.OnLocalChange(func(c ephemeral.Change) { tn.set2.Merge(c) })
	tn.set2.OnLocalChange(func(c ephemeral.Change) { tn.set1.Merge(c) })
	tr1, tr2 := clustertest.New(t), clustertest.New(t)
	tn.addrs = map[string]string{"n1": tr1.Addr(), "n2": tr2.Addr()}
	resolve := func(n string) (string, bool) {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		a, ok := tn.addrs[n]
		return a, ok
	}
	mk := func(node string, inc uint64, set *ephemeral.Set, tr *clustertest.Transport) (*Router, *cluster.Bus) {
		st := nodeStore{mem, set}
		r := New(Config{Domain: "localhost", Node: node, Store: st})
		a := accounts.New(st, "localhost", nil)
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		r.SetAccounts(a)
		b := cluster.New(cluster.Config{Node: node, Incarnation: inc, Transport: tr, Resolve: resolve})
		r.AttachBus(b, inc)
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Stop(ctx) })
		r.Hook(module.EvOffline, 50, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
			tn.mu.Lock()
			tn.offline = append(tn.offline, node+":"+ev.Stanza.ChildText("", "body"))
			tn.mu.Unlock()
			return true
		})
		r.Hook(module.EvSessionClosed, 50, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
			if _, ok := ev.Session.(*RemoteSession); ok {
				tn.mu.Lock()
				tn.closedEvents = append(tn.closedEvents, node+":"+ev.From.String())
				tn.mu.Unlock()
			}
			return false
		})
		return r, b
	}
	tn.mk = mk
	tn.r1, tn.b1 = mk("n1", 1, tn.set1, tr1)
	tn.r2, tn.b2 = mk("n2", 2, tn.set2, tr2)
	a := accounts.New(nodeStore{mem, tn.set1}, "localhost", nil)
	for _, u := range []string{"alice", "bob"} {
		if err := a.Create(ctx, u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return tn
}

// cutN2 makes node2 unreachable for node1: its bus stops, its address leads
// nowhere, and node1 drops the old connection (new sends queue up).
func (tn *twoNodes) cutN2(ctx context.Context) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	tn.mu.Lock()
	tn.addrs["n2"] = dead.Addr().String()
	tn.mu.Unlock()
	dead.Close()
	tn.b2.Stop(ctx)
	tn.b1.NodeDown("n2")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func bodies(s *fakeSess) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, st := range s.got {
		out = append(out, st.ChildText("", "body"))
	}
	return strings.Join(out, ",")
}

// RFC 6121 §8.5.2.1.1 across nodes: the bare JID goes to the highest priority
// resource wherever it is bound; a full JID to that resource; each stanza once.
func TestRemoteDeliveryByPriority(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	hi := sess("bob@localhost/hi", 5, true)
	lo := sess("bob@localhost/lo", 1, true)
	a := sess("alice@localhost/a", 0, true)
	tn.r2.Bind(ctx, hi)
	tn.r1.Bind(ctx, lo)
	tn.r1.Bind(ctx, a)
	tn.r2.SessionChanged(hi)
	if got := len(tn.r1.Sessions(jid.MustParse("bob@localhost"))); got != 2 {
		t.Fatalf("node1 sees %d of bob's sessions, want 2 (one remote)", got)
	}
	if rs, ok := tn.r1.Session(jid.MustParse("bob@localhost/hi")).(*RemoteSession); !ok || rs.Node() != "n2" || rs.Priority() != 5 || rs.Presence() == nil {
		t.Fatalf("bob/hi on node1: %#v", tn.r1.Session(jid.MustParse("bob@localhost/hi")))
	}
	tn.r1.Route(ctx, msg("alice@localhost/a", "bob@localhost", "chat"))
	waitFor(t, "bare message at bob/hi on node2", func() bool { return hi.n() == 1 })
	if lo.n() != 0 {
		t.Fatal("the lower priority local resource got the bare message")
	}
	tn.r1.Route(ctx, msg("alice@localhost/a", "bob@localhost/hi", "chat"))
	waitFor(t, "full JID message at bob/hi", func() bool { return hi.n() == 2 })
	// The delivered stanza is the stanza, from and to intact.
	hi.mu.Lock()
	got := hi.got[1]
	hi.mu.Unlock()
	if got.Attr("from") != "alice@localhost/a" || got.Attr("to") != "bob@localhost/hi" || got.ChildText("", "body") != "hi" {
		t.Fatalf("forwarded stanza: %s", got)
	}
	// A reply from node2 to alice's full JID on node1.
	tn.r2.Route(ctx, msg("bob@localhost/hi", "alice@localhost/a", "chat"))
	waitFor(t, "reply at alice on node1", func() bool { return a.n() == 1 })
}

// A newer bind of the same full JID on another node closes the older session
// with <conflict/>, whichever node learns of it first.
func TestRemoteConflictClosesOlder(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	old := sess("bob@localhost/x", 0, true)
	tn.r1.Bind(ctx, old)
	newer := sess("bob@localhost/x", 0, true)
	tn.r2.Bind(ctx, newer)
	waitFor(t, "conflict on the older session", func() bool { return closedOf(old) == "conflict" })
	if c := closedOf(newer); c != "" {
		t.Fatalf("the newer session was closed: %s", c)
	}
	// The sweep settles binds neither node announced to the other in time:
	// the older one (by HLC order) goes, the newer stays.
	a, b := sess("alice@localhost/y", 0, true), sess("alice@localhost/y", 0, true)
	tn.r1.Bind(ctx, a)
	busy := tn.r2.bus() // bind on node2 without the announcement reaching node1
	tn.r2.cl.mu.Lock()
	tn.r2.cl.bus = nil
	tn.r2.cl.mu.Unlock()
	tn.r2.Bind(ctx, b)
	tn.r2.cl.mu.Lock()
	tn.r2.cl.bus = busy
	tn.r2.cl.mu.Unlock()
	tn.r1.SweepConflicts()
	tn.r2.SweepConflicts()
	if closedOf(a) != "conflict" || closedOf(b) != "" {
		t.Fatalf("after the sweep: older %q newer %q", closedOf(a), closedOf(b))
	}
}

func closedOf(s *fakeSess) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// A node that dies with stanzas it never acknowledged: they are routed again
// (here: offline storage), and the responsible survivor fires EvSessionClosed
// for each lost session exactly once.
func TestNodeLostReroutesAndCloses(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	a := sess("alice@localhost/a", 0, true)
	tn.r1.Bind(ctx, a)
	hi := sess("bob@localhost/hi", 5, true)
	tn.r2.Bind(ctx, hi)
	tn.cutN2(ctx)
	tn.r1.Route(ctx, msg("alice@localhost/a", "bob@localhost", "chat"))
	iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "q1", "from", "alice@localhost/a", "to", "bob@localhost/hi")
	iq.Append(xmlstream.New("urn:xmpp:ping", "ping"))
	tn.r1.Route(ctx, iq)
	time.Sleep(100 * time.Millisecond)
	tn.mu.Lock()
	if len(tn.offline) != 0 {
		t.Fatalf("stored offline before the node was declared lost: %v", tn.offline)
	}
	tn.mu.Unlock()
	// The store drops node2's rows, then tells the router.
	rows := sessionRowsOf(tn.set1, "n2")
	tn.set1.DropNode("n2", 2)
	tn.r1.NodeLost(ctx, "n2", rows, true)
	waitFor(t, "the unacknowledged message stored offline", func() bool {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		return len(tn.offline) == 1 && tn.offline[0] == "n1:hi"
	})
	// The IQ to the lost full JID comes back as an error to its sender.
	waitFor(t, "the IQ bounced to alice", func() bool { return lastErr(a) == "service-unavailable" })
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if len(tn.closedEvents) != 1 || tn.closedEvents[0] != "n1:bob@localhost/hi" {
		t.Fatalf("EvSessionClosed for lost sessions: %v", tn.closedEvents)
	}
}

// smSess is a local session with XEP-0198 enabled (router.Describer says so).
type smSess struct{ *fakeSess }

func (s smSess) Info() SessionInfo { return SessionInfo{JID: s.j.String(), ID: s.id, SM: true} }

// A stanza forwarded to a resumable session is acknowledged to the sending
// node only after the barrier (c2s SyncReplicas: its resumption state is on
// another node); one to a session without XEP-0198 needs no barrier. Until
// then the sender still holds it: if the recipient's node dies, it is routed
// again instead of being lost.
func TestForwardToResumableSessionWaitsForBarrier(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	release := make(chan struct{})
	var mu sync.Mutex
	barriers := 0
	tn.b2.SetBarrier(func(ctx context.Context) error {
		mu.Lock()
		barriers++
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	a := sess("alice@localhost/a", 0, true)
	tn.r1.Bind(ctx, a)
	plain := sess("bob@localhost/plain", 0, true)
	tn.r2.Bind(ctx, plain)
	tn.r1.Route(ctx, msg("alice@localhost/a", "bob@localhost/plain", "chat"))
	waitFor(t, "message at bob/plain", func() bool { return plain.n() == 1 })
	waitFor(t, "acknowledged without a barrier", func() bool { return queued(tn.b1, "n2") == 0 })
	mu.Lock()
	if barriers != 0 {
		t.Fatalf("%d barriers for a session without XEP-0198", barriers)
	}
	mu.Unlock()

	sm := smSess{sess("bob@localhost/sm", 0, true)}
	tn.r2.Bind(ctx, sm)
	waitFor(t, "bob/sm seen on node1", func() bool { return tn.r1.Session(jid.MustParse("bob@localhost/sm")) != nil })
	tn.r1.Route(ctx, msg("alice@localhost/a", "bob@localhost/sm", "chat"))
	waitFor(t, "message at bob/sm", func() bool { return sm.n() == 1 })
	time.Sleep(50 * time.Millisecond)
	if q := queued(tn.b1, "n2"); q != 1 {
		t.Fatalf("a stanza to a resumable session was acknowledged before the barrier: queued %d", q)
	}
	close(release)
	waitFor(t, "acknowledged after the barrier", func() bool { return queued(tn.b1, "n2") == 0 })
}

func queued(b *cluster.Bus, node string) int {
	for _, ps := range b.Stats() {
		if ps.Node == node {
			return ps.Queued
		}
	}
	return 0
}

// A lost node's session that stays resumable here (an XEP-0198 copy) is not
// closed for its contacts when the node is lost, only when its resumption
// times out, and only by the node that was responsible; a resumed one is
// never closed.
func TestNodeLostHoldsResumableSessions(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	loseN2(t, tn, []string{"bob@localhost/sm", "bob@localhost/plain", "carol@localhost/sm"}, "bob@localhost/sm", "carol@localhost/sm")
	closed := func() []string {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		return slices.Clone(tn.closedEvents)
	}
	if got := closed(); len(got) != 1 || got[0] != "n1:bob@localhost/plain" {
		t.Fatalf("closed at the loss: %v (want only the session without resumption)", got)
	}
	if tn.r1.Held() != 2 {
		t.Fatalf("held %d, want 2", tn.r1.Held())
	}
	// bob/sm resumed (anywhere): never closed. carol/sm timed out: closed once.
	tn.r1.ResumeSettled(ctx, jid.MustParse("bob@localhost/sm"), true)
	tn.r1.ResumeSettled(ctx, jid.MustParse("carol@localhost/sm"), false)
	tn.r1.ResumeSettled(ctx, jid.MustParse("carol@localhost/sm"), false)
	if got := closed(); len(got) != 2 || got[1] != "n1:carol@localhost/sm" {
		t.Fatalf("closed after settling: %v", got)
	}
	if tn.r1.Held() != 0 {
		t.Fatalf("held %d after settling", tn.r1.Held())
	}
}

// loseN2 binds sessions on n2, then loses n2 on n1 (responsible), the sessions
// named in resumable staying resumable on n1.
func loseN2(t *testing.T, tn *twoNodes, bound []string, resumable ...string) {
	t.Helper()
	loseN2As(t, tn, true, bound, resumable...)
}

// loseN2As is loseN2 with n1 responsible for n2's sessions or not.
func loseN2As(t *testing.T, tn *twoNodes, responsible bool, bound []string, resumable ...string) {
	t.Helper()
	ctx := context.Background()
	for _, j := range bound {
		tn.r2.Bind(ctx, sess(j, 0, true))
	}
	waitFor(t, "node2's rows on node1", func() bool {
		n := 0
		tn.set1.Table(SessionTable).Scan("", func(r storage.Row) bool {
			if r.Node == "n2" {
				n++
			}
			return true
		})
		return n == len(bound)
	})
	rows := sessionRowsOf(tn.set1, "n2")
	keep := map[string]bool{}
	for _, j := range resumable {
		keep[j] = true
	}
	tn.r1.SetResumable(func(node string) map[string]bool {
		if node != "n2" {
			return nil
		}
		return keep
	})
	tn.b2.Stop(ctx)
	tn.set1.DropNode("n2", 2)
	tn.r1.NodeLost(ctx, "n2", rows, responsible)
}

// n1 was not responsible for lost n2's held sessions; the node that was went
// too, and resumption told n1 it takes over (TakeOverHeld): a held session
// not resumed in time is closed for its contacts here, once; one that was not
// taken over is not (its responsible node closes it).
func TestTakeOverHeldClosesUnresumedSession(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	loseN2As(t, tn, false, []string{"bob@localhost/sm", "carol@localhost/sm"}, "bob@localhost/sm", "carol@localhost/sm")
	tn.r1.TakeOverHeld(jid.MustParse("bob@localhost/sm"))
	tn.r1.ResumeSettled(ctx, jid.MustParse("bob@localhost/sm"), false)
	tn.r1.ResumeSettled(ctx, jid.MustParse("carol@localhost/sm"), false)
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if !slices.Equal(tn.closedEvents, []string{"n1:bob@localhost/sm"}) {
		t.Fatalf("closed: %v, want bob's session only", tn.closedEvents)
	}
}

// A resumption refused on this node (its state older than the client's) ends
// the lost session: its contacts are told once, unless the client has bound the
// resource again. Before, the refusal left it "resumed": no unavailable ever.
func TestResumeRefusedClosesTheLostSession(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	all := []string{"bob@localhost/sm", "carol@localhost/sm", "dave@localhost/sm", "eve@localhost/sm"}
	loseN2(t, tn, all, all...)
	closed := func() []string {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		return slices.Clone(tn.closedEvents)
	}
	if got := closed(); len(got) != 0 {
		t.Fatalf("closed at the loss: %v", got)
	}
	j := jid.MustParse
	// bob: taken by a resumption here, which is then refused: closed, once.
	tn.r1.ResumeSettled(ctx, j("bob@localhost/sm"), true)
	tn.r1.ResumeRefused(ctx, j("bob@localhost/sm"))
	tn.r1.ResumeRefused(ctx, j("bob@localhost/sm"))
	// carol: refused, but her client has bound the resource again: not closed.
	tn.r1.ResumeSettled(ctx, j("carol@localhost/sm"), true)
	tn.r1.Bind(ctx, sess("carol@localhost/sm", 0, true))
	tn.r1.ResumeRefused(ctx, j("carol@localhost/sm"))
	// dave: refused here while still held (the state came from a peer):
	// closed, and its later timeout closes nothing more.
	tn.r1.ResumeRefused(ctx, j("dave@localhost/sm"))
	tn.r1.ResumeSettled(ctx, j("dave@localhost/sm"), false)
	// eve: resumed: never closed.
	tn.r1.ResumeSettled(ctx, j("eve@localhost/sm"), true)
	if got := closed(); !slices.Equal(got, []string{"n1:bob@localhost/sm", "n1:dave@localhost/sm"}) {
		t.Fatalf("closed: %v; want bob and dave, once each", got)
	}
	if tn.r1.Held() != 0 {
		t.Fatalf("held %d after settling", tn.r1.Held())
	}
}

// Stanzas a lost node never took (the bus failed them) for a session that
// stays resumable here wait for its resumption instead of going to offline
// storage while it is bound nowhere: the resumed session gets them, in order,
// once bound (here: by Bind); a session not resumed in time has them routed as
// any stanza to an unbound resource (offline storage). Before, every one of
// them went to offline storage at the loss (a write that waits for a raft
// leader when the lost node was the leader), and reached the resumed session
// only through the flush of its re-announced presence, after newer messages.
func TestNodeLostKeepsStanzasForResumption(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	a := sess("alice@localhost/a", 0, true)
	tn.r1.Bind(ctx, a)
	for _, j := range []string{"bob@localhost/sm", "bob@localhost/gone"} {
		tn.r2.Bind(ctx, smSess{sess(j, 0, true)})
	}
	waitFor(t, "node2's rows on node1", func() bool {
		return tn.r1.Session(jid.MustParse("bob@localhost/sm")) != nil && tn.r1.Session(jid.MustParse("bob@localhost/gone")) != nil
	})
	tn.cutN2(ctx) // what node1 sends it now is never taken
	body := func(to, b string) *xmlstream.Element {
		m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", to, "type", "chat")
		return m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(b))
	}
	for _, b := range []string{"m1", "m2", "m3"} {
		tn.r1.Route(ctx, body("bob@localhost/sm", b))
	}
	tn.r1.Route(ctx, body("bob@localhost/gone", "g1"))
	waitFor(t, "four stanzas queued for node2", func() bool { return queued(tn.b1, "n2") == 4 })

	rows := sessionRowsOf(tn.set1, "n2")
	tn.r1.SetResumable(func(node string) map[string]bool {
		return map[string]bool{"bob@localhost/sm": true, "bob@localhost/gone": true}
	})
	tn.set1.DropNode("n2", 2)
	tn.r1.NodeLost(ctx, "n2", rows, true)
	time.Sleep(50 * time.Millisecond) // the bus fails them on its own goroutines
	tn.mu.Lock()
	if len(tn.offline) != 0 {
		t.Fatalf("stored offline while the session was held for its resumption: %v", tn.offline)
	}
	tn.mu.Unlock()

	// bob/sm resumes here: settled first (the copy is taken), then bound.
	tn.r1.ResumeSettled(ctx, jid.MustParse("bob@localhost/sm"), true)
	resumed := sess("bob@localhost/sm", 0, false)
	tn.r1.Bind(ctx, resumed)
	if got := bodies(resumed); got != "m1,m2,m3" {
		t.Fatalf("resumed session got %q, want m1,m2,m3 (at its bind)", got)
	}
	// bob/gone is not resumed in time: its stanza goes to offline storage.
	tn.r1.ResumeSettled(ctx, jid.MustParse("bob@localhost/gone"), false)
	waitFor(t, "g1 stored offline", func() bool {
		tn.mu.Lock()
		defer tn.mu.Unlock()
		return slices.Equal(tn.offline, []string{"n1:g1"})
	})
	if got := bodies(resumed); got != "m1,m2,m3" {
		t.Fatalf("resumed session got %q after the other settled", got)
	}
}

// bob's session of lost node2 resumes on node3 (from its copy there): what
// node1 kept for it — stanzas node2 never took — reaches it on node3 once
// node1 sees its row there, in order, and none goes to offline storage.
func TestKeptStanzasReachSessionResumedOnAnotherNode(t *testing.T) {
	ctx := context.Background()
	tn := setupTwo(t)
	tn.r1.Bind(ctx, sess("alice@localhost/a", 0, true))
	bob := jid.MustParse("bob@localhost/sm")
	tn.r2.Bind(ctx, smSess{sess(bob.String(), 0, true)})
	waitFor(t, "node2's row on node1", func() bool { return tn.r1.Session(bob) != nil })
	tn.cutN2(ctx)
	for _, b := range []string{"m1", "m2", "m3"} {
		m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", bob.String(), "type", "chat")
		tn.r1.Route(ctx, m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(b)))
	}
	waitFor(t, "three stanzas queued for node2", func() bool { return queued(tn.b1, "n2") == 3 })
	rows := sessionRowsOf(tn.set1, "n2")
	tn.r1.SetResumable(func(string) map[string]bool { return map[string]bool{bob.String(): true} })
	tn.set1.DropNode("n2", 2)
	tn.r1.NodeLost(ctx, "n2", rows, true)
	waitFor(t, "node2's queue failed", func() bool { return queued(tn.b1, "n2") == 0 })
	// node3 took the copy: settled here as resumed before its row is seen.
	tn.r1.ResumeSettled(ctx, bob, true)
	r3, _ := tn.addNode(t, "n3", 1)
	resumed := sess(bob.String(), 0, true)
	r3.Bind(ctx, resumed)
	waitFor(t, "the kept stanzas on node3", func() bool { return bodies(resumed) == "m1,m2,m3" })
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if len(tn.offline) != 0 {
		t.Fatalf("stored offline: %v", tn.offline)
	}
}

// sessionRowsOf returns node's session rows in set.
func sessionRowsOf(set *ephemeral.Set, node string) []storage.Row {
	var rows []storage.Row
	set.Table(SessionTable).Scan("", func(r storage.Row) bool {
		if r.Node == node {
			rows = append(rows, r)
		}
		return true
	})
	return rows
}
