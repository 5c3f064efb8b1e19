package mam

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

type fixture struct {
	t      testing.TB
	h      *modtest.Host
	m      *Module
	alice  *modtest.Session
	bob    *modtest.Session
	clock  time.Time
	clkMu  sync.Mutex
	roster map[string]bool
}

func newFixture(t testing.TB, o Options) *fixture {
	t.Helper()
	f := &fixture{t: t, h: modtest.NewHost("example.org", "alice", "bob", "carol"),
		clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), roster: map[string]bool{}}
	if o.InRoster == nil {
		o.InRoster = func(u, c string) bool { return f.roster[u+" "+c] }
	}
	f.m = New(o)
	f.m.now = func() time.Time {
		f.clkMu.Lock()
		defer f.clkMu.Unlock()
		f.clock = f.clock.Add(time.Second)
		return f.clock
	}
	ctx := context.Background()
	if err := f.m.Start(ctx, f.h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.m.Stop(ctx) })
	f.alice = f.h.Connect("alice@example.org/a")
	f.bob = f.h.Connect("bob@example.org/b")
	for _, s := range []*modtest.Session{f.alice, f.bob} {
		s.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	}
	return f
}

func chat(to, body string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "type", "chat", "to", to)
	if body != "" {
		m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	}
	return m
}

// send makes s send n messages to "to" with bodies prefix0..prefix(n-1).
func (f *fixture) send(s *modtest.Session, to, prefix string, n int) {
	for i := 0; i < n; i++ {
		f.h.Send(s, chat(to, prefix+strconv.Itoa(i)))
	}
}

type result struct {
	id, body, from string
	queryID        string
}

// query runs a MAM query as s and returns the results and the fin element.
func (f *fixture) query(s *modtest.Session, form map[string]string, rsm ...string) ([]result, *xmlstream.Element, *xmlstream.Element) {
	f.t.Helper()
	q := xmlstream.New(NS, "query", "queryid", "q1")
	if len(form) > 0 {
		x := xmlstream.New(NSData, "x", "type", "submit")
		x.Append(xmlstream.New(NSData, "field", "var", "FORM_TYPE").Append(xmlstream.New(NSData, "value").AppendText(NS)))
		for k, v := range form {
			x.Append(xmlstream.New(NSData, "field", "var", k).Append(xmlstream.New(NSData, "value").AppendText(v)))
		}
		q.Append(x)
	}
	if len(rsm) > 0 {
		set := xmlstream.New(NSRSM, "set")
		for i := 0; i+1 < len(rsm); i += 2 {
			set.Append(xmlstream.New(NSRSM, rsm[i]).AppendText(rsm[i+1]))
		}
		q.Append(set)
	}
	reply := f.h.IQ(s, "set", "", q)
	if reply == nil {
		f.t.Fatal("no reply to the query")
	}
	var out []result
	for _, st := range s.Take() {
		r := st.Child(NS, "result")
		if st.Local != "message" || r == nil {
			continue
		}
		fw := r.Child(NSForward, "forwarded")
		if fw == nil || fw.Child(NSDelay, "delay") == nil {
			f.t.Fatalf("result without forwarded/delay: %v", st)
		}
		msg := fw.Child("", "message")
		out = append(out, result{id: r.Attr("id"), body: msg.ChildText("", "body"), from: msg.Attr("from"), queryID: r.Attr("queryid")})
	}
	return out, reply, reply.Child(NS, "fin")
}

func bodies(rs []result) string {
	s := ""
	for _, r := range rs {
		s += r.body + " "
	}
	return s
}

func rsmText(fin *xmlstream.Element, name string) string {
	return fin.Child(NSRSM, "set").ChildText(NSRSM, name)
}

func TestArchiveBothDirectionsWithStanzaID(t *testing.T) {
	f := newFixture(t, Options{})
	f.send(f.alice, "bob@example.org", "a", 3)
	f.send(f.bob, "alice@example.org/a", "b", 2)
	var ids []string
	for _, st := range modtest.Find(f.bob.Take(), "message", "chat") {
		sid := st.Child(NSSID, "stanza-id")
		if sid == nil || sid.Attr("by") != "bob@example.org" || sid.Attr("id") == "" {
			t.Fatalf("delivered without our stanza-id: %v", st)
		}
		ids = append(ids, sid.Attr("id"))
	}
	if len(ids) != 3 {
		t.Fatalf("bob got %d messages", len(ids))
	}
	f.alice.Take()
	rs, reply, fin := f.query(f.bob, nil)
	if reply.Attr("type") != "result" || fin == nil || fin.Attr("complete") != "true" {
		t.Fatalf("reply %v", reply)
	}
	if got := bodies(rs); got != "a0 a1 a2 b0 b1 " {
		t.Fatalf("bob's archive: %q", got)
	}
	for i, id := range ids {
		if rs[i].id != id || rs[i].queryID != "q1" {
			t.Fatalf("result %d id %s queryid %s, delivered stanza-id %s", i, rs[i].id, rs[i].queryID, id)
		}
	}
	if rsmText(fin, "count") != "5" || rsmText(fin, "first") != rs[0].id || rsmText(fin, "last") != rs[4].id {
		t.Fatalf("fin %v", fin)
	}
	rs, _, _ = f.query(f.alice, nil)
	if got := bodies(rs); got != "a0 a1 a2 b0 b1 " {
		t.Fatalf("alice's archive: %q", got)
	}
}

func TestForgedStanzaIDRemoved(t *testing.T) {
	f := newFixture(t, Options{})
	m := chat("bob@example.org", "x")
	m.Append(xmlstream.New(NSSID, "stanza-id", "by", "bob@example.org", "id", "forged"),
		xmlstream.New(NSSID, "stanza-id", "by", "other.example", "id", "kept"))
	f.h.Send(f.alice, m)
	got := modtest.Find(f.bob.Take(), "message", "chat")
	if len(got) != 1 {
		t.Fatalf("got %d", len(got))
	}
	n, kept := 0, false
	for _, c := range got[0].Children() {
		if c.Local == "stanza-id" {
			n++
			if c.Attr("id") == "forged" {
				t.Fatalf("forged stanza-id delivered: %v", got[0])
			}
			kept = kept || c.Attr("id") == "kept"
		}
	}
	if n != 2 || !kept {
		t.Fatalf("stanza-ids: %v", got[0])
	}
}

func TestNotArchived(t *testing.T) {
	f := newFixture(t, Options{})
	f.h.Send(f.alice, chat("bob@example.org", "")) // no body
	hl := chat("bob@example.org", "h")
	hl.SetAttr("type", "headline")
	f.h.Send(f.alice, hl)
	ns := chat("bob@example.org", "n")
	ns.Append(xmlstream.New(NSHints, "no-store"))
	f.h.Send(f.alice, ns)
	for _, st := range f.bob.Take() {
		if st.Child(NSSID, "stanza-id") != nil {
			t.Fatalf("stanza-id on an unarchived message: %v", st)
		}
	}
	if rs, _, _ := f.query(f.bob, nil); len(rs) != 0 {
		t.Fatalf("archived %q", bodies(rs))
	}
}

func TestPagingForwardAndBackward(t *testing.T) {
	f := newFixture(t, Options{})
	f.send(f.alice, "bob@example.org", "m", 7)
	f.bob.Take()
	// Forward pages of 3: m0-2, m3-5, m6.
	rs, _, fin := f.query(f.bob, nil, "max", "3")
	if bodies(rs) != "m0 m1 m2 " || fin.Attr("complete") == "true" || rsmText(fin, "count") != "7" {
		t.Fatalf("page 1 %q %v", bodies(rs), fin)
	}
	if idx := fin.Child(NSRSM, "set").Child(NSRSM, "first").Attr("index"); idx != "0" {
		t.Fatalf("index %s", idx)
	}
	rs, _, fin = f.query(f.bob, nil, "max", "3", "after", rsmText(fin, "last"))
	if bodies(rs) != "m3 m4 m5 " || fin.Attr("complete") == "true" {
		t.Fatalf("page 2 %q %v", bodies(rs), fin)
	}
	if idx := fin.Child(NSRSM, "set").Child(NSRSM, "first").Attr("index"); idx != "3" {
		t.Fatalf("index %s", idx)
	}
	rs, _, fin = f.query(f.bob, nil, "max", "3", "after", rsmText(fin, "last"))
	if bodies(rs) != "m6 " || fin.Attr("complete") != "true" {
		t.Fatalf("page 3 %q %v", bodies(rs), fin)
	}
	// Backward: the last page, then the one before it.
	rs, _, fin = f.query(f.bob, nil, "max", "3", "before", "")
	if bodies(rs) != "m4 m5 m6 " || fin.Attr("complete") == "true" {
		t.Fatalf("last page %q %v", bodies(rs), fin)
	}
	if idx := fin.Child(NSRSM, "set").Child(NSRSM, "first").Attr("index"); idx != "4" {
		t.Fatalf("index %s", idx)
	}
	rs, _, fin = f.query(f.bob, nil, "max", "3", "before", rsmText(fin, "first"))
	if bodies(rs) != "m1 m2 m3 " || fin.Attr("complete") == "true" {
		t.Fatalf("previous page %q %v", bodies(rs), fin)
	}
	rs, _, fin = f.query(f.bob, nil, "max", "3", "before", rsmText(fin, "first"))
	if bodies(rs) != "m0 " || fin.Attr("complete") != "true" {
		t.Fatalf("first page %q %v", bodies(rs), fin)
	}
	// Count only.
	rs, _, fin = f.query(f.bob, nil, "max", "0")
	if len(rs) != 0 || rsmText(fin, "count") != "7" {
		t.Fatalf("max 0: %q %v", bodies(rs), fin)
	}
	// An unknown id.
	_, reply, _ := f.query(f.bob, nil, "after", "0000")
	if modtest.Cond(reply) != "item-not-found" {
		t.Fatalf("unknown after: %v", reply)
	}
}

func TestFilters(t *testing.T) {
	f := newFixture(t, Options{})
	carol := f.h.Connect("carol@example.org/c")
	carol.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	// The clock ticks a second per archived copy (sender's, then recipient's):
	// bob archives a0 at t+2, a1 t+4, c0 t+6, c1 t+8, x0 t+10.
	f.send(f.alice, "bob@example.org", "a", 2)
	f.send(carol, "bob@example.org", "c", 2)
	f.send(f.alice, "bob@example.org", "x", 1)
	f.bob.Take()
	rs, _, fin := f.query(f.bob, map[string]string{"with": "alice@example.org"})
	if bodies(rs) != "a0 a1 x0 " || rsmText(fin, "count") != "3" {
		t.Fatalf("with bare: %q", bodies(rs))
	}
	rs, _, _ = f.query(f.bob, map[string]string{"with": "alice@example.org/other"})
	if len(rs) != 0 {
		t.Fatalf("with full other resource: %q", bodies(rs))
	}
	rs, _, _ = f.query(f.bob, map[string]string{"with": "alice@example.org/a"})
	if len(rs) != 3 {
		t.Fatalf("with full: %q", bodies(rs))
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs, _, _ = f.query(f.bob, map[string]string{
		"start": base.Add(4 * time.Second).Format(time.RFC3339),
		"end":   base.Add(8 * time.Second).Format(time.RFC3339)})
	if bodies(rs) != "a1 c0 c1 " {
		t.Fatalf("start/end: %q", bodies(rs))
	}
	rs, _, _ = f.query(f.bob, map[string]string{"with": "carol@example.org", "start": base.Add(8 * time.Second).Format(time.RFC3339)})
	if bodies(rs) != "c1 " {
		t.Fatalf("with+start: %q", bodies(rs))
	}
	_, reply, _ := f.query(f.bob, map[string]string{"bogus": "1"})
	if modtest.Cond(reply) != "bad-request" {
		t.Fatalf("unknown field: %v", reply)
	}
	_, reply, _ = f.query(f.bob, map[string]string{"start": "yesterday"})
	if modtest.Cond(reply) != "bad-request" {
		t.Fatalf("bad start: %v", reply)
	}
}

func prefs(def string, always, never []string) *xmlstream.Element {
	p := xmlstream.New(NS, "prefs", "default", def)
	for _, l := range []struct {
		n string
		j []string
	}{{"always", always}, {"never", never}} {
		c := xmlstream.New(NS, l.n)
		for _, j := range l.j {
			c.Append(xmlstream.New(NS, "jid").AppendText(j))
		}
		p.Append(c)
	}
	return p
}

func TestPreferences(t *testing.T) {
	f := newFixture(t, Options{})
	carol := f.h.Connect("carol@example.org/c")
	carol.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	r := f.h.IQ(f.bob, "get", "", xmlstream.New(NS, "prefs"))
	if r.Attr("type") != "result" || r.Child(NS, "prefs").Attr("default") != "always" {
		t.Fatalf("default prefs %v", r)
	}
	r = f.h.IQ(f.bob, "set", "", prefs("never", []string{"carol@example.org"}, nil))
	if r.Attr("type") != "result" {
		t.Fatalf("set prefs %v", r)
	}
	r = f.h.IQ(f.bob, "get", "", xmlstream.New(NS, "prefs"))
	if p := r.Child(NS, "prefs"); p.Attr("default") != "never" || p.Child(NS, "always").ChildText(NS, "jid") != "carol@example.org" {
		t.Fatalf("stored prefs %v", r)
	}
	f.send(f.alice, "bob@example.org", "a", 1)
	f.send(carol, "bob@example.org", "c", 1)
	for _, st := range modtest.Find(f.bob.Take(), "message", "chat") {
		if (st.Child(NSSID, "stanza-id") != nil) != (st.ChildText("", "body") == "c0") {
			t.Fatalf("stanza-id presence wrong: %v", st)
		}
	}
	if rs, _, _ := f.query(f.bob, nil); bodies(rs) != "c0 " {
		t.Fatalf("never+always: %q", bodies(rs))
	}
	// roster default: only roster contacts.
	f.h.IQ(f.bob, "set", "", prefs("roster", nil, []string{"carol@example.org"}))
	f.roster["bob alice@example.org"] = true
	f.roster["bob carol@example.org"] = true
	f.send(f.alice, "bob@example.org", "r", 1)
	f.send(carol, "bob@example.org", "n", 1)
	f.bob.Take()
	if rs, _, _ := f.query(f.bob, nil); bodies(rs) != "c0 r0 " {
		t.Fatalf("roster+never: %q", bodies(rs))
	}
	if r := f.h.IQ(f.bob, "set", "", prefs("sometimes", nil, nil)); modtest.Cond(r) != "bad-request" {
		t.Fatalf("bad default: %v", r)
	}
}

func TestRetention(t *testing.T) {
	// memstore reports "ram-only": RAMMax applies.
	f := newFixture(t, Options{Max: 100, RAMMax: 4})
	f.send(f.alice, "bob@example.org", "m", 10)
	f.bob.Take()
	rs, _, fin := f.query(f.bob, nil)
	if bodies(rs) != "m6 m7 m8 m9 " || rsmText(fin, "count") != "4" {
		t.Fatalf("capped archive: %q", bodies(rs))
	}
	if a, b := f.m.archiveLen("alice@example.org"), f.m.archiveLen("bob@example.org"); a != 4 || b != 4 {
		t.Fatalf("archives hold %d and %d messages, want 4 each", a, b)
	}
}

func TestUserRemoved(t *testing.T) {
	f := newFixture(t, Options{})
	f.send(f.alice, "bob@example.org", "m", 2)
	f.h.RemoveUser("bob")
	for _, k := range f.h.MemStore().Keys(Table) {
		if len(k) > 4 && k[:4] == "bob@" {
			t.Fatalf("left %q", k)
		}
	}
}

// The appender batches: many messages queued while the store is slow become few
// writes, and all are archived.
func TestBatching(t *testing.T) {
	f := newFixture(t, Options{Max: -1, RAMMax: 100000})
	const n = 3000
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < n/4; i++ {
				f.m.Append("room@conference.example.org", In, fmt.Sprintf("room@conference.example.org/u%d", g),
					chat("room@conference.example.org", "x"))
			}
		}(g)
	}
	wg.Wait()
	p, err := f.m.Query(context.Background(), "room@conference.example.org", Query{Max: 1})
	if err != nil || p.Count != n {
		t.Fatalf("count %d err %v", p.Count, err)
	}
	p, err = f.m.Query(context.Background(), "room@conference.example.org", Query{With: "room@conference.example.org/u2", MaxZero: true})
	if err != nil || p.Count != n/4 {
		t.Fatalf("with count %d err %v", p.Count, err)
	}
}

// Removing a user while the appender trims other archives is race-free (run with
// -race) and leaves nothing of the removed user.
func TestUserRemovedWhileAppending(t *testing.T) {
	f := newFixture(t, Options{Max: 5, RAMMax: 5})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 300; i++ {
			f.m.Append("carol@example.org", In, "dave@example.org", chat("carol@example.org", "x"))
		}
	}()
	for i := 0; i < 20; i++ {
		f.m.Append("bob@example.org", In, "dave@example.org", chat("bob@example.org", "y"))
		f.h.RemoveUser("bob")
	}
	wg.Wait()
	if err := f.m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.h.RemoveUser("bob")
	for _, k := range f.h.MemStore().Keys(Table) {
		if len(k) > 4 && k[:4] == "bob@" {
			t.Fatalf("left %q", k)
		}
	}
}
