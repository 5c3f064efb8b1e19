package push

import (
	"context"
	"strings"
	"testing"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

const appServer = "push.example.net"

func setup(t *testing.T) (*modtest.Host, *Module) {
	t.Helper()
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return h, m
}

func iqSet(payload *xmlstream.Element) *xmlstream.Element {
	return xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "e1").Append(payload)
}

func enableEl(node string, withForm bool) *xmlstream.Element {
	e := xmlstream.New(NS, "enable", "jid", appServer, "node", node)
	if withForm {
		x := xmlstream.New(NSData, "x", "type", "submit")
		x.Append(field("FORM_TYPE", FormPublishOptions, "hidden"), field("secret", "s3cr3t", ""))
		e.Append(x)
	}
	return e
}

// reply returns the IQ reply the session got.
func reply(t *testing.T, s *modtest.Session) *xmlstream.Element {
	t.Helper()
	for _, st := range s.Take() {
		if st.Local == "iq" {
			return st
		}
	}
	t.Fatal("no IQ reply")
	return nil
}

func msg(from, to, body string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "type", "chat", "from", from, "to", to)
	if body != "" {
		m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	}
	return m
}

// summary returns the fields of the notification in a publish IQ.
func summary(t *testing.T, iq *xmlstream.Element, node string) map[string]string {
	t.Helper()
	if iq.Local != "iq" || iq.Attr("type") != "set" || iq.Attr("to") != appServer || iq.Attr("from") != "alice@example.org" {
		t.Fatalf("notification IQ %v", iq)
	}
	pub := iq.Child(NSPubsub, "pubsub").Child(NSPubsub, "publish")
	if pub == nil || pub.Attr("node") != node {
		t.Fatalf("publish %v", iq)
	}
	x := pub.Child(NSPubsub, "item").Child(NS, "notification").Child(NSData, "x")
	out := map[string]string{}
	for _, f := range x.Children() {
		out[f.Attr("var")] = f.ChildText(NSData, "value")
	}
	if out["FORM_TYPE"] != NSSummary {
		t.Fatalf("FORM_TYPE %q", out["FORM_TYPE"])
	}
	return out
}

func TestEnableNotifyOfflineAndDisable(t *testing.T) {
	h, m := setup(t)
	a := h.Connect("alice@example.org/phone")
	h.Send(a, iqSet(xmlstream.New(NS, "enable", "jid", appServer)))
	if r := reply(t, a); r.Attr("type") != "error" || r.Child("", "error").Child(module.NSStanzas, "bad-request") == nil {
		t.Fatalf("enable without node: %v", r)
	}
	h.Send(a, iqSet(enableEl("n1", true)))
	if r := reply(t, a); r.Attr("type") != "result" {
		t.Fatalf("enable: %v", r)
	}
	if regs := m.Registrations("alice"); len(regs) != 1 || regs[0].JID != appServer || regs[0].Node != "n1" || regs[0].Tag == "" {
		t.Fatalf("registrations %+v", regs)
	}
	h.Disconnect(a)

	// No session: the message goes offline and a notification goes out.
	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", "hello there"))
	h.Route(context.Background(), msg("carol@other.example/x", "alice@example.org", "second"))
	var pubs []*xmlstream.Element
	for _, st := range h.Routed() {
		if st.Local == "iq" {
			pubs = append(pubs, st)
		}
	}
	if len(pubs) != 2 {
		t.Fatalf("want 2 notifications, got %d", len(pubs))
	}
	f := summary(t, pubs[0], "n1")
	if f["message-count"] != "1" || f["last-message-sender"] != "bob@example.org/pc" {
		t.Fatalf("first summary %v", f)
	}
	if _, ok := f["last-message-body"]; ok {
		t.Fatal("body sent although IncludeBody is off")
	}
	if f := summary(t, pubs[1], "n1"); f["message-count"] != "2" || f["last-message-sender"] != "carol@other.example/x" {
		t.Fatalf("second summary %v", f)
	}
	opts := pubs[0].Child(NSPubsub, "pubsub").Child(NSPubsub, "publish-options")
	if opts == nil || !strings.Contains(string(xmlstream.AppendElement(nil, opts, "")), "s3cr3t") {
		t.Fatalf("publish-options not passed on: %v", pubs[0])
	}
	if len(h.Bounced()) != 2 {
		t.Fatal("the messages should still reach offline handling")
	}
	// A message without a body (a chat state) wakes nobody.
	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", ""))
	if r := h.Routed(); len(r) != 0 {
		t.Fatalf("notification for a bodiless message: %v", r)
	}

	// Activity restarts the count.
	a = h.Connect("alice@example.org/phone")
	h.Disconnect(a)
	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", "third"))
	if r := h.Routed(); len(r) != 1 || summary(t, r[0], "n1")["message-count"] != "1" {
		t.Fatalf("count after activity: %v", r)
	}

	a = h.Connect("alice@example.org/phone")
	h.Send(a, iqSet(xmlstream.New(NS, "disable", "jid", appServer)))
	if r := reply(t, a); r.Attr("type") != "result" {
		t.Fatalf("disable: %v", r)
	}
	if regs := m.Registrations("alice"); len(regs) != 0 {
		t.Fatalf("after disable: %+v", regs)
	}
}

func TestIncludeBodyAndDetachedSessions(t *testing.T) {
	h, m := setup(t)
	m.Configure(Config{IncludeBody: true})
	detached := false
	m.detached = func(module.Session) bool { return detached }
	a := h.Connect("alice@example.org/phone")
	a.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	h.Send(a, iqSet(enableEl("n2", false)))
	reply(t, a)

	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", "live"))
	if r := h.Routed(); len(r) != 0 {
		t.Fatalf("notification while the session reads: %v", r)
	}
	a.Take()
	detached = true
	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", "while asleep"))
	r := h.Routed()
	if len(r) != 1 {
		t.Fatalf("want a notification for the detached session, got %v", r)
	}
	if f := summary(t, r[0], "n2"); f["last-message-body"] != "while asleep" {
		t.Fatalf("summary %v", f)
	}
	if r[0].Child(NSPubsub, "pubsub").Child(NSPubsub, "publish-options") != nil {
		t.Fatal("publish-options without a registered form")
	}
}

func TestAppServerErrorDisables(t *testing.T) {
	h, m := setup(t)
	a := h.Connect("alice@example.org/phone")
	h.Send(a, iqSet(enableEl("n1", false)))
	reply(t, a)
	h.Disconnect(a)
	h.Route(context.Background(), msg("bob@example.org/pc", "alice@example.org", "x"))
	pub := h.Routed()[0]
	tag := m.Registrations("alice")[0].Tag
	if !strings.Contains(pub.Attr("id"), tag) {
		t.Fatalf("id %q does not carry the tag", pub.Attr("id"))
	}

	// A result is taken silently; an error from someone else, or a wait error,
	// keeps the registration.
	ctx := context.Background()
	h.Route(ctx, module.Result(pub))
	forged := module.Error(pub, module.ErrCancel, "item-not-found", "")
	forged.SetAttr("from", "mallory@example.org")
	h.Route(ctx, forged)
	h.Route(ctx, module.Error(pub, module.ErrWait, "resource-constraint", ""))
	if regs := m.Registrations("alice"); len(regs) != 1 {
		t.Fatalf("registration lost: %+v", regs)
	}
	if b := h.Bounced(); len(b) != 1 { // only the message itself
		t.Fatalf("bounced %v", b)
	}
	// An unreachable app server (a component not connected) is counted, not
	// taken as its answer.
	for i := 1; i < MaxUnreachable; i++ {
		h.Route(ctx, module.Error(pub, module.ErrCancel, "service-unavailable", "component not connected"))
	}
	if regs := m.Registrations("alice"); len(regs) != 1 {
		t.Fatalf("registration lost after %d unreachable errors: %+v", MaxUnreachable-1, regs)
	}
	h.Route(ctx, module.Result(pub)) // a success starts the count over
	for i := 1; i < MaxUnreachable; i++ {
		h.Route(ctx, module.Error(pub, module.ErrCancel, "remote-server-not-found", ""))
	}
	if regs := m.Registrations("alice"); len(regs) != 1 {
		t.Fatalf("the count did not start over after a result: %+v", regs)
	}
	h.Route(ctx, module.Error(pub, module.ErrCancel, "remote-server-not-found", ""))
	if regs := m.Registrations("alice"); len(regs) != 0 {
		t.Fatalf("registration kept after %d unreachable errors in a row: %+v", MaxUnreachable, regs)
	}

	// Any other error disables at once.
	a = h.Connect("alice@example.org/phone")
	h.Send(a, iqSet(enableEl("n1", false)))
	reply(t, a)
	h.Disconnect(a)
	h.Route(ctx, msg("bob@example.org/pc", "alice@example.org", "x2"))
	h.Bounced()
	pub = h.Routed()[0]
	h.Route(ctx, module.Error(pub, module.ErrCancel, "item-not-found", ""))
	if regs := m.Registrations("alice"); len(regs) != 0 {
		t.Fatalf("registration kept after an error: %+v", regs)
	}
	h.Route(ctx, msg("bob@example.org/pc", "alice@example.org", "y"))
	if r := h.Routed(); len(r) != 0 {
		t.Fatalf("notification after the registration was disabled: %v", r)
	}
}

func TestForbiddenAndStorageErrors(t *testing.T) {
	h, _ := setup(t)
	b := h.Connect("bob@example.org/pc")
	st := iqSet(enableEl("n1", false))
	st.SetAttr("to", "alice@example.org")
	h.Send(b, st)
	if r := reply(t, b); r.Child("", "error").Child(module.NSStanzas, "forbidden") == nil {
		t.Fatalf("enable for another account: %v", r)
	}
	h.MemStore().SetFail(storage.ErrUnavailable)
	h.Send(b, iqSet(enableEl("n1", false)))
	if r := reply(t, b); r.Attr("type") != "error" || r.Child("", "error").Attr("type") != module.ErrWait {
		t.Fatalf("enable with storage failing: %v", r)
	}
	h.MemStore().SetFail(nil)
	for i := 0; i < MaxRegistrations; i++ {
		h.Send(b, iqSet(enableEl("node"+string(rune('a'+i)), false)))
		if r := reply(t, b); r.Attr("type") != "result" {
			t.Fatalf("enable %d: %v", i, r)
		}
	}
	h.Send(b, iqSet(enableEl("one-too-many", false)))
	if r := reply(t, b); r.Child("", "error").Child(module.NSStanzas, "resource-constraint") == nil {
		t.Fatalf("registration beyond the cap: %v", r)
	}
	h.RemoveUser("bob")
	if k := h.MemStore().Keys(Table); len(k) != 0 {
		t.Fatalf("rows left after the account was removed: %q", k)
	}
}

type fakeLocal struct{ *modtest.Session }

func (fakeLocal) Detached() bool { return true }

type fakeRemote struct {
	*modtest.Session
	flags []string
}

func (r fakeRemote) Flag(f string) bool {
	for _, x := range r.flags {
		if x == f {
			return true
		}
	}
	return false
}

// A local session says itself whether it is detached; a session on another node
// through the flag its node publishes.
func TestSessionDetached(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	s := h.Connect("alice@example.org/a")
	if sessionDetached(s) {
		t.Error("a plain session counts as detached")
	}
	if !sessionDetached(fakeLocal{s}) {
		t.Error("a local detached session not seen")
	}
	if sessionDetached(fakeRemote{s, []string{"carbons"}}) || !sessionDetached(fakeRemote{s, []string{"carbons", FlagDetached}}) {
		t.Error("the remote detached flag is not read")
	}
}
