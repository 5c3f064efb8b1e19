package muc

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// host is modtest's host plus a domain router that sends stanzas for served
// domains to their handler (as the core's router does).
type host struct {
	*modtest.Host
	handlers map[string]module.DomainHandler
}

func (h *host) HandleDomain(d string, fn module.DomainHandler) {
	if fn == nil {
		delete(h.handlers, d)
		return
	}
	h.handlers[d] = fn
}
func (h *host) SetRemoteRoute(module.DomainHandler) {}
func (h *host) ServedDomains() []string {
	var out []string
	for d := range h.handlers {
		out = append(out, d)
	}
	return out
}

type env struct {
	t *testing.T
	h *host
	m *Module
	s map[string]*modtest.Session
}

func newEnv(t *testing.T, h *host) *env {
	t.Helper()
	if h == nil {
		h = &host{Host: modtest.NewHost("example.org", "alice", "bob", "carol"), handlers: map[string]module.DomainHandler{}}
	}
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h, m: m, s: map[string]*modtest.Session{}}
	for _, u := range []string{"alice", "bob", "carol"} {
		e.s[u] = h.Connect(u + "@example.org/r")
		e.s[u].SetPresence(xmlstream.New(NSClient, "presence"))
	}
	return e
}

// send plays raw stanza XML (attributes from/to given) from user u to the service.
func (e *env) send(u string, st *xmlstream.Element) {
	e.t.Helper()
	from := jid.MustParse(u + "@example.org/r")
	st.SetAttr("from", from.String())
	to := jid.MustParse(st.Attr("to"))
	h := e.h.handlers[to.Domain]
	if h == nil {
		e.t.Fatalf("no handler for %s", to.Domain)
	}
	h(context.Background(), st, from, to)
}

func (e *env) take(u string) []*xmlstream.Element { return e.s[u].Take() }

func pres(to string, kids ...xmlstream.Node) *xmlstream.Element {
	return xmlstream.New(NSClient, "presence", "to", to).Append(kids...)
}

func mucX(kids ...xmlstream.Node) *xmlstream.Element { return xmlstream.New(NS, "x").Append(kids...) }

func codes(st *xmlstream.Element) []string {
	var out []string
	if x := st.Child(NSUser, "x"); x != nil {
		for _, c := range x.Children() {
			if c.Local == "status" {
				out = append(out, c.Attr("code"))
			}
		}
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func errCond(st *xmlstream.Element) string {
	if e := st.Child(NSClient, "error"); e != nil {
		if c := e.FirstChild(); c != nil {
			return c.Local
		}
	}
	return ""
}

const roomJ = "room@conference.example.org"

// instant creates room as alice's instant room (MUC-aware create + empty submit).
func (e *env) instant(cfg ...xmlstream.Node) {
	e.t.Helper()
	e.send("alice", pres(roomJ+"/al", mucX()))
	got := e.take("alice")
	if len(got) != 2 || !has(codes(got[0]), "201") || !has(codes(got[0]), "110") || got[1].Child(NSClient, "subject") == nil {
		e.t.Fatalf("creation presence: %v", got)
	}
	// Locked: bob cannot join yet.
	e.send("bob", pres(roomJ+"/bo", mucX()))
	if b := e.take("bob"); len(b) != 1 || errCond(b[0]) != "item-not-found" {
		e.t.Fatalf("locked room let bob in: %v", b)
	}
	x := xmlstream.New(NSData, "x", "type", "submit").Append(cfg...)
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "c1", "to", roomJ).Append(xmlstream.New(NSOwner, "query").Append(x)))
	if got := e.take("alice"); len(got) != 1 || got[0].Attr("type") != "result" {
		e.t.Fatalf("config submit: %v", got)
	}
}

func TestJoinMessageLeave(t *testing.T) {
	e := newEnv(t, nil)
	e.instant()
	e.send("bob", pres(roomJ+"/bo", mucX()))
	got := e.take("bob")
	// alice's presence, own presence with 110, then the (empty) subject.
	if len(got) != 3 || got[0].Attr("from") != roomJ+"/al" || !has(codes(got[1]), "110") || got[2].Child(NSClient, "subject") == nil {
		t.Fatalf("bob's join: %v", got)
	}
	if a := e.take("alice"); len(a) != 1 || a[0].Attr("from") != roomJ+"/bo" || has(codes(a[0]), "110") {
		t.Fatalf("alice saw: %v", a)
	}
	// Nick conflict.
	e.send("carol", pres(roomJ+"/bo", mucX()))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "conflict" {
		t.Fatalf("conflict: %v", c)
	}
	// Groupchat to both.
	msg := xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "body").AppendText("hi"))
	e.send("bob", msg)
	for _, u := range []string{"alice", "bob"} {
		g := e.take(u)
		if len(g) != 1 || g[0].Attr("from") != roomJ+"/bo" || g[0].ChildText(NSClient, "body") != "hi" {
			t.Fatalf("%s got %v", u, g)
		}
	}
	// Non-occupant cannot send.
	e.send("carol", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "body").AppendText("x")))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "not-acceptable" {
		t.Fatalf("outsider groupchat: %v", c)
	}
	// Private message.
	e.send("alice", xmlstream.New(NSClient, "message", "type", "chat", "to", roomJ+"/bo").Append(xmlstream.New(NSClient, "body").AppendText("psst")))
	if b := e.take("bob"); len(b) != 1 || b[0].Attr("from") != roomJ+"/al" || b[0].ChildText(NSClient, "body") != "psst" {
		t.Fatalf("private: %v", b)
	}
	// History for carol: 1 message with delay; maxstanzas=0 gives none.
	e.send("carol", pres(roomJ+"/ca", mucX()))
	c := e.take("carol")
	var hist int
	for _, st := range c {
		if st.Child(NSDelay, "delay") != nil {
			hist++
		}
	}
	if hist != 1 {
		t.Fatalf("history: %v", c)
	}
	e.take("alice")
	e.take("bob")
	// Leave: everyone gets unavailable; carol with 110.
	e.send("carol", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/ca"))
	if c := e.take("carol"); len(c) != 1 || c[0].Attr("type") != "unavailable" || !has(codes(c[0]), "110") {
		t.Fatalf("leave self: %v", c)
	}
	if a := e.take("alice"); len(a) != 1 || a[0].Attr("type") != "unavailable" {
		t.Fatalf("leave others: %v", a)
	}
	e.send("carol", pres(roomJ+"/ca", mucX(xmlstream.New(NS, "history", "maxstanzas", "0"))))
	for _, st := range e.take("carol") {
		if st.Child(NSDelay, "delay") != nil {
			t.Fatalf("maxstanzas=0 still sent history: %v", st)
		}
	}
	// Self-ping (XEP-0410).
	ping := func(u, to string) *xmlstream.Element {
		e.send(u, xmlstream.New(NSClient, "iq", "type", "get", "id", "p", "to", to).Append(xmlstream.New(NSPing, "ping")))
		g := e.take(u)
		if len(g) != 1 {
			t.Fatalf("ping: %v", g)
		}
		return g[0]
	}
	e.take("alice")
	if r := ping("carol", roomJ+"/ca"); r.Attr("type") != "result" {
		t.Fatalf("self-ping joined: %v", r)
	}
	e.h.Disconnect(e.s["carol"])
	e.s["carol"] = e.h.Connect("carol@example.org/r")
	if a := e.take("alice"); len(a) != 1 || a[0].Attr("type") != "unavailable" {
		t.Fatalf("disconnect did not remove carol: %v", a)
	}
	if r := ping("carol", roomJ+"/ca"); errCond(r) != "not-acceptable" {
		t.Fatalf("self-ping after disconnect: %v", r)
	}
	// Temporary room vanishes when empty.
	e.send("alice", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/al"))
	e.send("bob", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/bo"))
	if r := e.m.Rooms(); len(r) != 0 {
		t.Fatalf("temporary room kept: %v", r)
	}
}

func TestKickBanMembersOnlyPassword(t *testing.T) {
	e := newEnv(t, nil)
	e.instant()
	e.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("bob")
	e.take("alice")
	var rest []*xmlstream.Element // what admin's caller was sent besides the reply
	admin := func(u string, item *xmlstream.Element) *xmlstream.Element {
		e.send(u, xmlstream.New(NSClient, "iq", "type", "set", "id", "a", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(item)))
		var reply *xmlstream.Element
		rest = nil
		for _, st := range e.take(u) {
			if st.Local == "iq" {
				reply = st
			} else {
				rest = append(rest, st)
			}
		}
		if reply == nil {
			t.Fatalf("no admin reply")
		}
		return reply
	}
	// bob (participant) cannot kick alice.
	if r := admin("bob", xmlstream.New(NSAdmin, "item", "nick", "al", "role", "none")); r.Attr("type") != "error" {
		t.Fatalf("participant kicked: %v", r)
	}
	if r := admin("alice", xmlstream.New(NSAdmin, "item", "nick", "bo", "role", "none").Append(xmlstream.New(NSAdmin, "reason").AppendText("bye"))); r.Attr("type") != "result" {
		t.Fatalf("kick: %v", r)
	}
	if b := e.take("bob"); len(b) != 1 || !has(codes(b[0]), "307") || !has(codes(b[0]), "110") {
		t.Fatalf("kicked sees: %v", b)
	}
	if a := rest; len(a) != 1 || !has(codes(a[0]), "307") {
		t.Fatalf("alice sees kick: %v", a)
	}
	// Ban bob; he cannot rejoin.
	if r := admin("alice", xmlstream.New(NSAdmin, "item", "jid", "bob@example.org", "affiliation", "outcast")); r.Attr("type") != "result" {
		t.Fatalf("ban: %v", r)
	}
	e.send("bob", pres(roomJ+"/bo", mucX()))
	if b := e.take("bob"); len(b) != 1 || errCond(b[0]) != "forbidden" {
		t.Fatalf("banned joined: %v", b)
	}
	// Members-only + password.
	x := xmlstream.New(NSData, "x", "type", "submit").Append(
		field("muc#roomconfig_membersonly", "", "1"),
		field("muc#roomconfig_passwordprotectedroom", "", "1"),
		field("muc#roomconfig_roomsecret", "", "s3"))
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "c2", "to", roomJ).Append(xmlstream.New(NSOwner, "query").Append(x)))
	e.take("alice")
	e.send("carol", pres(roomJ+"/ca", mucX()))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "registration-required" {
		t.Fatalf("members-only: %v", c)
	}
	if r := admin("alice", xmlstream.New(NSAdmin, "item", "jid", "carol@example.org", "affiliation", "member")); r.Attr("type") != "result" {
		t.Fatalf("member: %v", r)
	}
	e.send("carol", pres(roomJ+"/ca", mucX()))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "not-authorized" {
		t.Fatalf("password: %v", c)
	}
	e.send("carol", pres(roomJ+"/ca", mucX(xmlstream.New(NS, "password").AppendText("s3"))))
	if c := e.take("carol"); len(c) < 2 || errCond(c[0]) != "" {
		t.Fatalf("member with password: %v", c)
	}
	// Affiliation list.
	e.take("alice")
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "get", "id", "l", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "affiliation", "outcast"))))
	l := e.take("alice")
	if len(l) != 1 || !strings.Contains(l[0].String(), "bob@example.org") {
		t.Fatalf("outcast list: %v", l)
	}
}

func TestPersistentRoomSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.instant(field("muc#roomconfig_persistentroom", "", "1"), field("muc#roomconfig_roomname", "", "The Room"))
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "a", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "jid", "bob@example.org", "affiliation", "member"))))
	e.send("alice", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/al"))
	if r := e.m.Rooms(); len(r) != 1 {
		t.Fatalf("persistent room gone when empty: %v", r)
	}
	// A new module on the same store (a restart) has the roomJ, its name and affiliations.
	e2 := newEnv(t, &host{Host: e.h.Host, handlers: map[string]module.DomainHandler{}})
	if r := e2.m.Rooms(); len(r) != 1 || r[0] != "room" {
		t.Fatalf("after restart: %v", r)
	}
	e2.send("bob", xmlstream.New(NSClient, "iq", "type", "get", "id", "i", "to", roomJ).Append(xmlstream.New(NSInfo, "query")))
	got := e2.take("bob")
	if len(got) != 1 || !strings.Contains(got[0].String(), "The Room") || !strings.Contains(got[0].String(), "muc_persistent") {
		t.Fatalf("disco#info: %v", got)
	}
	r2, _, err := e2.m.load("room")
	if err != nil || r2 == nil {
		t.Fatalf("load after restart: %v %v", r2, err)
	}
	aff := r2.aff(jid.MustParse("bob@example.org"))
	if aff != AffMember {
		t.Fatalf("bob's affiliation after restart: %q", aff)
	}
	// Service disco#items lists it.
	e2.send("bob", xmlstream.New(NSClient, "iq", "type", "get", "id", "d", "to", "conference.example.org").Append(xmlstream.New(NSItems, "query")))
	if g := e2.take("bob"); len(g) != 1 || !strings.Contains(g[0].String(), roomJ) {
		t.Fatalf("service items: %v", g)
	}
}

func TestMediatedInvitationAndSubject(t *testing.T) {
	e := newEnv(t, nil)
	e.instant()
	inv := xmlstream.New(NSClient, "message", "to", roomJ).Append(xmlstream.New(NSUser, "x").Append(
		xmlstream.New(NSUser, "invite", "to", "carol@example.org").Append(xmlstream.New(NSUser, "reason").AppendText("join us"))))
	e.send("alice", inv)
	c := e.take("carol")
	if len(c) != 1 || c[0].Attr("from") != roomJ || !strings.Contains(c[0].String(), "alice@example.org") {
		t.Fatalf("invitation: %v", c)
	}
	e.send("alice", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "subject").AppendText("Topic")))
	e.take("alice")
	e.send("carol", pres(roomJ+"/ca", mucX()))
	got := e.take("carol")
	last := got[len(got)-1]
	if last.ChildText(NSClient, "subject") != "Topic" || last.Attr("from") != roomJ+"/al" {
		t.Fatalf("subject on join: %v", got)
	}
	// A participant may not change the subject by default.
	e.send("carol", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "subject").AppendText("Mine")))
	if g := e.take("carol"); len(g) != 1 || errCond(g[0]) != "forbidden" {
		t.Fatalf("participant subject: %v", g)
	}
}

func TestHistorySeconds(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Unix(1_000_000, 0)
	e.m.now = func() time.Time { return now }
	e.instant()
	for i, b := range []string{"old", "new"} {
		now = time.Unix(1_000_000+int64(i)*100, 0)
		e.send("alice", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "body").AppendText(b)))
	}
	e.take("alice")
	e.send("bob", pres(roomJ+"/bo", mucX(xmlstream.New(NS, "history", "seconds", "50"))))
	var bodies []string
	for _, st := range e.take("bob") {
		if b := st.ChildText(NSClient, "body"); b != "" {
			bodies = append(bodies, b)
		}
	}
	if len(bodies) != 1 || bodies[0] != "new" {
		t.Fatalf("history seconds=50: %v", bodies)
	}
}

func TestStoreFailureRollsBack(t *testing.T) {
	e := newEnv(t, nil)
	e.instant(field("muc#roomconfig_persistentroom", "", "1"))
	e.h.MemStore().SetFail(storage.ErrUnavailable)
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "a", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "jid", "bob@example.org", "affiliation", "outcast"))))
	if g := e.take("alice"); len(g) != 1 || errCond(g[0]) != "resource-constraint" {
		t.Fatalf("ban with storage down: %v", g)
	}
	// Joining writes the occupant to the replicated table: refused while it is down.
	e.send("bob", pres(roomJ+"/bo", mucX()))
	if g := e.take("bob"); len(g) != 1 || errCond(g[0]) != "resource-constraint" {
		t.Fatalf("join with storage down: %v", g)
	}
	e.h.MemStore().SetFail(nil)
	e.send("bob", pres(roomJ+"/bo", mucX()))
	if g := e.take("bob"); len(g) < 2 || errCond(g[0]) != "" {
		t.Fatalf("unstored ban kept: %v", g)
	}
}

// Two modules on one store stand for two nodes sharing the replicated table: a
// persistent room configured through one is known, with its affiliations, to the
// other without a restart.
func TestPersistentRoomSeenByAnotherNode(t *testing.T) {
	e := newEnv(t, nil)
	h2 := &host{Host: e.h.Host, handlers: map[string]module.DomainHandler{}} // same store and sessions
	if err := New().Start(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, h: h2, s: e.s}
	e.instant(field("muc#roomconfig_persistentroom", "", "1"), field("muc#roomconfig_membersonly", "", "1"))
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "a", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "jid", "bob@example.org", "affiliation", "member"))))
	e.take("alice")
	e2.send("carol", pres(roomJ+"/ca", mucX()))
	if g := e.take("carol"); len(g) != 1 || errCond(g[0]) != "registration-required" {
		t.Fatalf("other node let a non-member in: %v", g)
	}
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	if g := e.take("bob"); len(g) < 2 || errCond(g[0]) != "" || !strings.Contains(g[len(g)-2].String(), "affiliation='member'") {
		t.Fatalf("other node: member join: %v", g)
	}
}

// twoNodes returns an env whose users alice and carol are served by one module
// and bob by a second module on the same store and sessions: two nodes of a
// cluster sharing the replicated tables. Both modules hook EvSessionClosed, as
// if both nodes thought themselves responsible for a lost session.
func twoNodes(t *testing.T) (e, e2 *env) {
	e = newEnv(t, nil)
	h2 := &host{Host: e.h.Host, handlers: map[string]module.DomainHandler{}}
	m2 := New()
	if err := m2.Start(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	return e, &env{t: t, h: h2, m: m2, s: e.s}
}

// threeOccupants is twoNodes with alice's instant room, alice (al) and carol
// (ca) in it through node 1 and bob (bo) through node 2, their joins taken.
func threeOccupants(t *testing.T) (e, e2 *env) {
	e, e2 = twoNodes(t)
	e.instant()
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	e.send("carol", pres(roomJ+"/ca", mucX()))
	for _, u := range []string{"alice", "bob", "carol"} {
		e.take(u)
	}
	return e, e2
}

func groupchat(body string) *xmlstream.Element {
	return xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "body").AppendText(body))
}

func TestOccupantsOnTwoNodes(t *testing.T) {
	e, e2 := twoNodes(t)
	e.instant()
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	if g := e.take("bob"); len(g) != 3 || g[0].Attr("from") != roomJ+"/al" || !has(codes(g[1]), "110") {
		t.Fatalf("bob's join through node 2: %v", g)
	}
	if a := e.take("alice"); len(a) != 1 || a[0].Attr("from") != roomJ+"/bo" {
		t.Fatalf("alice (node 1) saw: %v", a)
	}
	// The nick alice holds through node 1 is taken on node 2 too.
	e2.send("carol", pres(roomJ+"/al", mucX()))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "conflict" {
		t.Fatalf("nick conflict across nodes: %v", c)
	}
	// Messages both ways.
	e2.send("bob", groupchat("from node 2"))
	e.send("alice", groupchat("from node 1"))
	for _, u := range []string{"alice", "bob"} {
		g := e.take(u)
		if len(g) != 2 || g[0].ChildText(NSClient, "body") != "from node 2" || g[1].ChildText(NSClient, "body") != "from node 1" {
			t.Fatalf("%s got %v", u, g)
		}
	}
	// A kick through node 1 of bob (joined through node 2) removes him everywhere.
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "k", "to", roomJ).Append(xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "nick", "bo", "role", "none"))))
	if b := e.take("bob"); len(b) != 1 || !has(codes(b[0]), "307") {
		t.Fatalf("kick: %v", b)
	}
	e.take("alice")
	if o := e2.m.Occupants("room"); len(o) != 1 || o[0] != "al" {
		t.Fatalf("node 2 sees occupants %v after the kick", o)
	}
}

// A session that ends (or a lost node's session, for which the router runs
// EvSessionClosed on one survivor) leaves every room once, even if two nodes
// handle its end: the remaining occupants get exactly one unavailable presence.
func TestSessionEndRemovesOccupantOnce(t *testing.T) {
	e, e2 := threeOccupants(t)
	// Node 2 reads the room, then node 1 removes bob: node 2's removal, built
	// on its stale read, must fail instead of announcing bob's departure again.
	stale, s, err := e2.m.load("room")
	if err != nil || stale == nil {
		t.Fatal(err)
	}
	e.h.Disconnect(e.s["bob"]) // both modules' hooks run
	var o out
	e2.m.leave(context.Background(), &o, stale, stale.occ["bo"], nil, "")
	if err := e2.h.Store().Apply(context.Background(), e2.m.diff("room", stale, s)...); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("a removal on a stale read was applied: %v", err)
	}
	for _, u := range []string{"alice", "carol"} {
		g := e.take(u)
		if len(g) != 1 || g[0].Attr("type") != "unavailable" || g[0].Attr("from") != roomJ+"/bo" {
			t.Fatalf("%s got %v", u, g)
		}
	}
	if o := e2.m.Occupants("room"); strings.Join(o, ",") != "al,ca" {
		t.Fatalf("occupants after bob's end: %v", o)
	}
	// The room keeps working.
	e2.send("carol", groupchat("still here"))
	if a := e.take("alice"); len(a) != 1 || a[0].ChildText(NSClient, "body") != "still here" {
		t.Fatalf("after the loss: %v", a)
	}
}

// Two nodes letting two users join with one nick at the same time: exactly one
// gets it (the other's conditional write fails and its join is handled again).
func TestConcurrentJoinSameNick(t *testing.T) {
	for range 20 {
		e, e2 := twoNodes(t)
		e.instant()
		done := make(chan struct{})
		go func() { e2.send("bob", pres(roomJ+"/x", mucX())); close(done) }()
		e.send("carol", pres(roomJ+"/x", mucX()))
		<-done
		joined := 0
		for _, u := range []string{"bob", "carol"} {
			for _, st := range e.take(u) {
				if has(codes(st), "110") {
					joined++
				}
			}
		}
		if joined != 1 {
			t.Fatalf("%d users joined with one nick", joined)
		}
	}
}

// lagging are the tables a lagging node's view reads stale (modtest.LagStore).
var lagging = []string{Table, LiveTable}

type lagHost struct {
	*host
	st *modtest.LagStore
}

func (h *lagHost) Store() storage.Store { return h.st }

// An owner unlocks a room through node 1 and bob joins at once through node 2,
// whose replica has not applied the unlock yet: the refusal is decided again
// after node 2 caught up, and bob joins (the first cluster run refused him with
// item-not-found: "the room is locked").
func TestJoinAfterUnlockOnLaggingNode(t *testing.T) {
	e := newEnv(t, nil)
	e2, ls := lagNode(t, e, nil)
	e.send("alice", pres(roomJ+"/al", mucX()))
	e.take("alice")
	ls.CatchUp() // node 2 has the locked room
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "c", "to", roomJ).Append(xmlstream.New(NSOwner, "query").Append(xmlstream.New(NSData, "x", "type", "submit"))))
	if g := e.take("alice"); len(g) != 1 || g[0].Attr("type") != "result" {
		t.Fatalf("unlock: %v", g)
	}
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	if g := e.take("bob"); len(g) < 2 || errCond(g[0]) != "" || !has(codes(g[len(g)-2]), "110") {
		t.Fatalf("join through the lagging node: %v", g)
	}
}

// carol joins through node 1 while node 2 has not applied it yet; bob joins
// through node 2 on that stale read. Once bob's batch is committed node 2 is up
// to date and sends what the stale read missed: carol gets bob's presence, bob
// gets carol's, and a later leave reaches carol too.
func TestJoinOnStaleReadReachesLateOccupants(t *testing.T) {
	e := newEnv(t, nil)
	e2, ls := lagNode(t, e, nil)
	e.instant()
	ls.CatchUp() // node 2 knows the room and alice
	e.send("carol", pres(roomJ+"/ca", mucX()))
	e.take("alice")
	e.take("carol")
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	var froms []string
	for _, st := range e.take("bob") {
		if st.Local == "presence" {
			froms = append(froms, st.Attr("from"))
		}
	}
	if !has(froms, roomJ+"/ca") || !has(froms, roomJ+"/al") {
		t.Fatalf("bob did not get every occupant: %v", froms)
	}
	if c := e.take("carol"); len(c) != 1 || c[0].Attr("from") != roomJ+"/bo" {
		t.Fatalf("carol (joined meanwhile) got %v", c)
	}
	e.take("alice")
	e2.send("bob", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/bo"))
	if c := e.take("carol"); len(c) != 1 || c[0].Attr("type") != "unavailable" {
		t.Fatalf("carol got %v for bob's leave", c)
	}
}

// Node 2 has not applied the creation of a room that alice has meanwhile made
// persistent (its row moved to muc_rooms): bob's join through node 2 must join
// that room, not create a second one (the first cluster runs did: no row was
// left in muc_live for the creation's condition to hit).
func TestJoinOnStaleReadDoesNotCreateTwice(t *testing.T) {
	e := newEnv(t, nil)
	e2, _ := lagNode(t, e, nil)
	e.instant(field("muc#roomconfig_persistentroom", "", "1"))
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	g := e.take("bob")
	if len(g) != 3 || g[0].Attr("from") != roomJ+"/al" || has(codes(g[1]), "201") {
		t.Fatalf("bob's join through the lagging node: %v", g)
	}
	live, err := e.h.Store().Durable(LiveTable)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := live.Count("r\x00"); c != 0 {
		t.Fatalf("a second room row was created in %s", LiveTable)
	}
}

// bob, joined through node 2, speaks right after carol joined through node 1,
// before node 2 applied her join: node 2 catches up before reading the
// occupants, and carol gets the message (the first cluster run lost it).
func TestMessageAfterJoinOnLaggingNode(t *testing.T) {
	e := newEnv(t, nil)
	e2, ls := lagNode(t, e, nil)
	e.instant()
	ls.CatchUp()
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	e.send("carol", pres(roomJ+"/ca", mucX()))
	for _, u := range []string{"alice", "bob", "carol"} {
		e.take(u)
	}
	e2.send("bob", groupchat("welcome"))
	if c := e.take("carol"); len(c) != 1 || c[0].ChildText(NSClient, "body") != "welcome" {
		t.Fatalf("carol got %v", c)
	}
}

// countStore counts Apply calls.
type countStore struct {
	storage.Store
	applies atomic.Int32
}

func (c *countStore) Apply(ctx context.Context, ops ...storage.Op) error {
	c.applies.Add(1)
	return c.Store.Apply(ctx, ops...)
}

// countedRoom is one node on a lagging view of a store that counts Apply calls
// (wrap, if not nil, wraps the counting store), with alice's instant room and
// bob in it, their joins taken.
func countedRoom(t *testing.T, wrap func(storage.Store) storage.Store) (*env, *countStore) {
	t.Helper()
	base := &host{Host: modtest.NewHost("example.org", "alice", "bob", "carol"), handlers: map[string]module.DomainHandler{}}
	cs := &countStore{Store: base.Store()}
	var st storage.Store = cs
	if wrap != nil {
		st = wrap(cs)
	}
	h := &lagHost{host: base, st: &modtest.LagStore{Store: st, Lagging: lagging}}
	h.st.CatchUp()
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: base, m: m, s: map[string]*modtest.Session{}}
	for _, u := range []string{"alice", "bob"} {
		e.s[u] = base.Connect(u + "@example.org/r")
	}
	e.instant()
	e.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("alice")
	e.take("bob")
	return e, cs
}

// Without a quorum (writes fail) messages still flow on this node's reads, and
// after one failed sync the next messages do not wait for another.
func TestMessagesWithoutQuorum(t *testing.T) {
	e, cs := countedRoom(t, nil)
	e.h.MemStore().SetFail(storage.ErrUnavailable)
	before := cs.applies.Load()
	for i := range 3 {
		e.send("alice", groupchat("m"+strconv.Itoa(i)))
		if b := e.take("bob"); len(b) != 1 || b[0].ChildText(NSClient, "body") != "m"+strconv.Itoa(i) {
			t.Fatalf("message %d without quorum: %v", i, b)
		}
	}
	if n := cs.applies.Load() - before; n != 1 {
		t.Fatalf("%d syncs tried for 3 messages without quorum, want 1", n)
	}
}

// A session that ends while the store takes no writes (the raft election after
// a leader died with its node) is removed once writes work again, not left as a
// ghost.
func TestSessionEndWhileStoreUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	e.instant()
	e.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("alice")
	e.take("bob")
	e.h.MemStore().SetFail(storage.ErrUnavailable)
	e.h.Disconnect(e.s["bob"])
	if a := e.take("alice"); len(a) != 0 {
		t.Fatalf("removal announced without being stored: %v", a)
	}
	e.h.MemStore().SetFail(nil)
	var got []*xmlstream.Element
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		got = e.take("alice")
	}
	if len(got) != 1 || got[0].Attr("type") != "unavailable" || got[0].Attr("from") != roomJ+"/bo" {
		t.Fatalf("after the store came back: %v", got)
	}
	if o := e.m.Occupants("room"); len(o) != 1 || o[0] != "al" {
		t.Fatalf("occupants: %v", o)
	}
}

// An occupant row left without its room row (the temporary room was deleted by
// its last leave through one node while a join through another committed) is a
// room again at the next stanza: instant, default configuration, its occupant
// its owner (who could not configure it otherwise).
func TestOrphanOccupantBecomesOwner(t *testing.T) {
	e := newEnv(t, nil)
	e.instant()
	e.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("alice")
	e.take("bob")
	ctx := context.Background()
	if err := e.h.Store().Apply(ctx, storage.Delete(LiveTable, roomKey("room")), storage.Delete(LiveTable, occPrefix("room")+"al"),
		storage.Delete(LiveTable, jidKey("alice@example.org/r", "room"))); err != nil {
		t.Fatal(err)
	}
	e.send("bob", xmlstream.New(NSClient, "iq", "type", "get", "id", "c", "to", roomJ).Append(xmlstream.New(NSOwner, "query")))
	if g := e.take("bob"); len(g) != 1 || g[0].Attr("type") != "result" {
		t.Fatalf("bob's configuration request: %v", g)
	}
	if r := e.m.Rooms(); len(r) != 1 {
		t.Fatalf("rooms: %v", r)
	}
}

// lagNode starts a second module (node 2) on a lagging view of e's store,
// caught up now, with archive a (nil: none).
func lagNode(t *testing.T, e *env, a Archive) (*env, *modtest.LagStore) {
	t.Helper()
	ls := &modtest.LagStore{Store: e.h.Store(), Lagging: lagging}
	h2 := &lagHost{host: &host{Host: e.h.Host, handlers: map[string]module.DomainHandler{}}, st: ls}
	m2 := New()
	if a != nil {
		m2.WithArchive(a)
	}
	if err := m2.Start(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	ls.CatchUp()
	return &env{t: t, h: h2.host, m: m2, s: e.s}, ls
}

// nickChange checks what one occupant got for a nick change from old to nick:
// the old nick unavailable with 303 and the new nick, then the new nick
// available; self says 110 is expected on both.
func nickChange(t *testing.T, u string, g []*xmlstream.Element, old, nick string, self bool) {
	t.Helper()
	if len(g) != 2 {
		t.Fatalf("%s got %d stanzas for the nick change: %v", u, len(g), g)
	}
	un, av := g[0], g[1]
	item := un.Child(NSUser, "x").Child(NSUser, "item")
	if un.Attr("type") != "unavailable" || un.Attr("from") != roomJ+"/"+old || !has(codes(un), "303") || item == nil || item.Attr("nick") != nick {
		t.Fatalf("%s: unavailable for the old nick: %v", u, un)
	}
	if av.Attr("type") != "" || av.Attr("from") != roomJ+"/"+nick || has(codes(av), "303") {
		t.Fatalf("%s: available for the new nick: %v", u, av)
	}
	if has(codes(un), "110") != self || has(codes(av), "110") != self {
		t.Fatalf("%s: status 110 on the change (self=%v): %v", u, self, g)
	}
}

// A nick change (XEP-0045 §7.6) through node 2 reaches occupants on both nodes;
// a nick held through the other node is refused with a conflict and nothing
// changes; the old nick is free afterwards and the new one is the occupant's
// everywhere (messages, private messages, the end of the session).
func TestNickChangeAcrossNodes(t *testing.T) {
	e, e2 := threeOccupants(t)
	// Taken (alice, through node 1): conflict, nobody hears of it.
	e2.send("bob", pres(roomJ+"/al"))
	if b := e.take("bob"); len(b) != 1 || errCond(b[0]) != "conflict" {
		t.Fatalf("change to a taken nick: %v", b)
	}
	for _, u := range []string{"alice", "carol"} {
		if g := e.take(u); len(g) != 0 {
			t.Fatalf("%s heard of a refused change: %v", u, g)
		}
	}
	if o := e.m.Occupants("room"); strings.Join(o, ",") != "al,bo,ca" {
		t.Fatalf("occupants after a refused change: %v", o)
	}
	// Free: everyone, on both nodes, gets 303 then the new nick.
	e2.send("bob", pres(roomJ+"/bobby"))
	nickChange(t, "bob", e.take("bob"), "bo", "bobby", true)
	nickChange(t, "alice", e.take("alice"), "bo", "bobby", false)
	nickChange(t, "carol", e.take("carol"), "bo", "bobby", false)
	for _, n := range []*env{e, e2} {
		if o := n.m.Occupants("room"); strings.Join(o, ",") != "al,bobby,ca" {
			t.Fatalf("occupants after the change: %v", o)
		}
	}
	// The new nick is taken through node 1 too; the old one is free.
	e.send("carol", pres(roomJ+"/bobby"))
	if c := e.take("carol"); len(c) != 1 || errCond(c[0]) != "conflict" {
		t.Fatalf("node 1 let carol take bob's new nick: %v", c)
	}
	e.send("carol", pres(roomJ+"/bo"))
	nickChange(t, "carol", e.take("carol"), "ca", "bo", true)
	e.take("alice")
	e.take("bob")
	// Bob speaks and is spoken to under his new nick.
	e2.send("bob", groupchat("renamed"))
	if a := e.take("alice"); len(a) != 1 || a[0].Attr("from") != roomJ+"/bobby" {
		t.Fatalf("groupchat after the change: %v", a)
	}
	e.take("bob")
	e.take("carol")
	e.send("alice", xmlstream.New(NSClient, "message", "type", "chat", "to", roomJ+"/bobby").Append(xmlstream.New(NSClient, "body").AppendText("pm")))
	if b := e.take("bob"); len(b) != 1 || b[0].ChildText(NSClient, "body") != "pm" {
		t.Fatalf("private message to the new nick: %v", b)
	}
	// The end of bob's session removes the new nick once.
	e.h.Disconnect(e.s["bob"])
	for _, u := range []string{"alice", "carol"} {
		if g := e.take(u); len(g) != 1 || g[0].Attr("type") != "unavailable" || g[0].Attr("from") != roomJ+"/bobby" {
			t.Fatalf("%s after bob's end: %v", u, g)
		}
	}
	if o := e2.m.Occupants("room"); strings.Join(o, ",") != "al,bo" {
		t.Fatalf("occupants after bob's end: %v", o)
	}
}

// Two occupants changing to one nick through two nodes at the same time:
// exactly one gets it.
func TestConcurrentNickChange(t *testing.T) {
	for range 20 {
		e, e2 := threeOccupants(t)
		done := make(chan struct{})
		go func() { e2.send("bob", pres(roomJ+"/x")); close(done) }()
		e.send("carol", pres(roomJ+"/x"))
		<-done
		changed, refused := 0, 0
		for _, u := range []string{"bob", "carol"} {
			for _, st := range e.take(u) {
				if has(codes(st), "303") && has(codes(st), "110") {
					changed++
				}
				if errCond(st) == "conflict" {
					refused++
				}
			}
		}
		if changed != 1 || refused != 1 {
			t.Fatalf("%d changed and %d refused for one nick", changed, refused)
		}
		if o := e2.m.Occupants("room"); len(o) != 3 {
			t.Fatalf("occupants %v", o)
		}
	}
}

// bodies returns the bodies of the groupchat messages in g, with their from.
func bodies(g []*xmlstream.Element) []string {
	var out []string
	for _, st := range g {
		if b := st.ChildText(NSClient, "body"); b != "" {
			out = append(out, st.Attr("from")+" "+b)
		}
	}
	return out
}

// Node 2 keeps the room it decoded for messages; every change made through node
// 1 (a leave, a join, a nick change, a role change) must be seen by node 2's
// next message, as if node 2 had read the tables afresh. Node 2 speaks before
// each change so that its cached room is the one from before the change.
func TestRoomCacheSeesChangesOfOtherNode(t *testing.T) {
	e, e2 := threeOccupants(t)
	say := func(body string) {
		t.Helper()
		e2.send("bob", groupchat(body))
	}
	got := func(u string, want ...string) {
		t.Helper()
		if g := bodies(e.take(u)); strings.Join(g, "|") != strings.Join(want, "|") {
			t.Fatalf("%s got %q, want %q", u, g, want)
		}
	}
	say("before")
	for _, u := range []string{"alice", "bob", "carol"} {
		got(u, roomJ+"/bo before")
	}

	// Leave through node 1: carol gets nothing more.
	e.send("carol", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/ca"))
	e.take("alice")
	e.take("bob")
	e.take("carol")
	say("after leave")
	got("carol")
	got("alice", roomJ+"/bo after leave")
	e.take("bob")

	// Join through node 1: carol gets the next message.
	e.send("carol", pres(roomJ+"/ca", mucX(xmlstream.New(NS, "history", "maxstanzas", "0"))))
	e.take("alice")
	e.take("bob")
	e.take("carol")
	say("after join")
	got("carol", roomJ+"/bo after join")
	e.take("alice")
	e.take("bob")

	// Nick change through node 1: node 2 knows carol as cc (a private message
	// to the old nick fails, to the new one arrives) and lists her so.
	e.send("carol", pres(roomJ+"/cc"))
	for _, u := range []string{"alice", "bob", "carol"} {
		e.take(u)
	}
	e2.send("bob", xmlstream.New(NSClient, "message", "type", "chat", "to", roomJ+"/cc").Append(xmlstream.New(NSClient, "body").AppendText("psst")))
	if c := e.take("carol"); len(c) != 1 || c[0].ChildText(NSClient, "body") != "psst" || c[0].Attr("from") != roomJ+"/bo" {
		t.Fatalf("private message to the new nick through node 2: %v (bob: %v)", c, e.take("bob"))
	}
	e2.send("bob", xmlstream.New(NSClient, "message", "type", "chat", "to", roomJ+"/ca").Append(xmlstream.New(NSClient, "body").AppendText("psst")))
	if b := e.take("bob"); len(b) != 1 || errCond(b[0]) != "item-not-found" {
		t.Fatalf("private message to the old nick through node 2: %v", b)
	}
	if o := e2.m.Occupants("room"); strings.Join(o, ",") != "al,bo,cc" {
		t.Fatalf("node 2's occupants after the nick change: %v", o)
	}

	// Role change through node 1: alice (moderator) takes bob's voice; bob's
	// next message through node 2 is refused.
	say("voiced")
	for _, u := range []string{"alice", "bob", "carol"} {
		got(u, roomJ+"/bo voiced")
	}
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "v", "to", roomJ).Append(
		xmlstream.New(NSAdmin, "query").Append(xmlstream.New(NSAdmin, "item", "nick", "bo", "role", RoleVisitor))))
	if a := e.take("alice"); len(a) != 2 || a[0].Attr("type") != "result" {
		t.Fatalf("revoke voice: %v", a)
	}
	e.take("bob")
	e.take("carol")
	say("muted")
	if b := e.take("bob"); len(b) != 1 || errCond(b[0]) != "forbidden" {
		t.Fatalf("a visitor's message through node 2 after the role change through node 1: %v", b)
	}
	got("alice")
	got("carol")
	if v := e.h.Violations(); len(v) != 0 {
		t.Fatalf("RouteParsed contract: %v", v)
	}
}

// Handling messages on the shared decoded room changes nothing in it: what is
// cached is what a fresh decode of the tables gives.
func TestMessagesLeaveCachedRoomIntact(t *testing.T) {
	e, e2 := threeOccupants(t)
	for i := range 3 {
		e2.send("bob", groupchat("m"+strconv.Itoa(i)))
		e.send("alice", groupchat("n"+strconv.Itoa(i)))
	}
	// A subject change is a message that changes the room: written, not
	// handled on the shared room.
	e.send("alice", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomJ).Append(xmlstream.New(NSClient, "subject").AppendText("Topic")))
	e.take("alice")
	e.take("bob")
	for _, m := range []*Module{e.m, e2.m} {
		c, err := m.view("room")
		if err != nil || c.r == nil {
			t.Fatal(err)
		}
		raw, disc, err := m.roomRow("room")
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := m.decode("room", raw, disc)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := roomString(c.r), roomString(fresh.r); a != b {
			t.Fatalf("cached room changed by messages:\n%s\nfresh:\n%s", a, b)
		}
		if !c.clean {
			t.Fatal("the room needs a write after messages")
		}
	}
	if g := e.take("carol"); len(g) != 7 {
		t.Fatalf("carol got %d messages, want 7", len(g))
	}
	for _, m := range []*Module{e.m, e2.m} {
		if c, _ := m.view("room"); c.r.subject != "Topic" {
			t.Fatalf("subject %q", c.r.subject)
		}
	}
}

func roomString(r *room) string {
	var b strings.Builder
	b.WriteString(r.name + " " + r.subject + " " + strconv.FormatBool(r.locked) + " " + strconv.FormatBool(r.gone) + "\n")
	for _, a := range sortedKeysS(r.affs) {
		b.WriteString("aff " + a + "=" + r.affs[a] + "\n")
	}
	for _, n := range r.sortedNicks() {
		oc := r.occ[n]
		b.WriteString("occ " + n + " " + oc.nick + " " + oc.full() + " " + oc.role + "\n")
	}
	for _, j := range sortedKeysS(r.byJID) {
		b.WriteString("jid " + j + "=" + r.byJID[j] + "\n")
	}
	return b.String()
}

func sortedKeysS(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// statusStore reports a backend of its choice.
type statusStore struct {
	storage.Store
	backend string
}

func (s statusStore) Status() storage.Status {
	st := s.Store.Status()
	st.Backend = s.backend
	return st
}

// On a single-node store (Backend "local": every write is applied by this
// node's Apply, reads never lag) a message needs no sync before it reads the
// occupants; on any other store it takes one.
func TestMessageSyncOnlyWhenReadsMayLag(t *testing.T) {
	for _, tc := range []struct {
		backend string
		syncs   int32
	}{{"local", 0}, {"raft+ram", 3}, {"memstore", 3}} {
		e, cs := countedRoom(t, func(s storage.Store) storage.Store { return statusStore{Store: s, backend: tc.backend} })
		before := cs.applies.Load()
		for i := range 3 {
			e.send("alice", groupchat("m"+strconv.Itoa(i)))
			if b := e.take("bob"); len(b) != 1 || b[0].ChildText(NSClient, "body") != "m"+strconv.Itoa(i) {
				t.Fatalf("%s: message %d: %v", tc.backend, i, b)
			}
		}
		if n := cs.applies.Load() - before; n != tc.syncs {
			t.Fatalf("%s: %d syncs for 3 messages, want %d", tc.backend, n, tc.syncs)
		}
	}
}
