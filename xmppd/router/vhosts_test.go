package router

import (
	"context"
	"testing"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// setupHosts is a router serving a.example (default) and b.example: alice has
// an account on both, bob on b.example only.
func setupHosts(t *testing.T) *Router {
	ctx := context.Background()
	st := memstore.New("n1")
	r := New(Config{Domain: "a.example", Hosts: []string{"a.example", "b.example"}, Node: "n1", Store: st})
	a := accounts.New(st, "a.example", nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := accounts.NewHosts("a.example")
	hs.Set("a.example", a)
	hs.Set("b.example", a.ForHost("b.example"))
	r.SetAccounts(hs)
	for _, u := range []string{"alice", "alice@b.example", "bob@b.example"} {
		if err := hs.Create(ctx, u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestVirtualHostsRouting(t *testing.T) {
	ctx := context.Background()
	r := setupHosts(t)
	var _ module.VirtualHosts = r
	if !r.IsLocal("b.example") || r.IsLocal("c.example") || len(r.Hosts()) != 2 || r.Hosts()[0] != "a.example" {
		t.Fatalf("hosts %v", r.Hosts())
	}
	aa := sess("alice@a.example/r", 0, true)
	ab := sess("alice@b.example/r", 0, true)
	bb := sess("bob@b.example/r", 0, true)
	for _, s := range []*fakeSess{aa, ab, bb} {
		r.Bind(ctx, s)
	}
	// Same localpart, other host: another account, another session.
	r.Route(ctx, msg("alice@a.example/r", "alice@b.example", "chat"))
	if ab.n() != 1 || aa.n() != 0 {
		t.Fatalf("alice@b got %d, alice@a %d", ab.n(), aa.n())
	}
	r.Route(ctx, msg("bob@b.example/r", "alice@a.example", "chat"))
	if aa.n() != 1 || ab.n() != 1 {
		t.Fatal("b -> a")
	}
	// bob exists on b.example only.
	r.Route(ctx, msg("alice@a.example/r", "bob@a.example", "chat"))
	if lastErr(aa) != "service-unavailable" {
		t.Fatalf("bob@a.example: %q", lastErr(aa))
	}
	// Offline delivery of a host's user goes to EvOffline with the right JID.
	r.Unbind(ctx, bb)
	var off []jid.JID
	r.Hook(module.EvOffline, 0, func(_ context.Context, h module.Host, ev *module.EventData) bool {
		off = append(off, ev.To)
		if k := module.UserKey(h, ev.To); k != "bob@b.example" {
			t.Errorf("user key %q", k)
		}
		return true
	})
	r.Route(ctx, msg("alice@a.example/r", "bob@b.example", "chat"))
	if len(off) != 1 || off[0].String() != "bob@b.example" {
		t.Fatalf("offline %v", off)
	}
	// An unserved domain is remote.
	r.Route(ctx, msg("alice@b.example/r", "x@c.example", "chat"))
	if lastErr(ab) != "remote-server-not-found" {
		t.Fatalf("c.example: %q", lastErr(ab))
	}
	// IQs to each host's server JID reach the handler, with the sender's session.
	var tos []string
	r.HandleIQ("urn:x", func(ctx context.Context, h module.Host, iq *module.IQ) {
		if iq.Session == nil {
			t.Error("no session for a local sender of another host")
		}
		tos = append(tos, iq.To.String())
		h.Route(ctx, module.Result(iq.Stanza))
	})
	for _, to := range []string{"a.example", "b.example"} {
		iq := xmlstream.New(xmlstream.NSClient, "iq", "from", "alice@b.example/r", "to", to, "type", "get", "id", "1")
		r.Route(ctx, iq.Append(xmlstream.New("urn:x", "q")))
	}
	if len(tos) != 2 || tos[1] != "b.example" || ab.got[len(ab.got)-1].Attr("type") != "result" {
		t.Fatalf("server IQs %v", tos)
	}
}

func TestUserKey(t *testing.T) {
	r := setupHosts(t)
	for _, c := range []struct{ j, key string }{{"alice@a.example", "alice"}, {"alice@b.example", "alice@b.example"}} {
		j := jid.MustParse(c.j)
		if k := module.UserKey(r, j); k != c.key || module.UserJID(r, k) != j {
			t.Fatalf("%s: key %q, back %v", c.j, k, module.UserJID(r, k))
		}
	}
	if l, err := r.Accounts().List(context.Background()); err != nil || len(l) != 3 || l[0] != "alice" || l[2] != "bob@b.example" {
		t.Fatalf("list %v %v", l, err)
	}
}
