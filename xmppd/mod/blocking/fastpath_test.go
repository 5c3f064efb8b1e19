package blocking

import (
	"context"
	"testing"

	"xedge/storage"
	"xedge/storage/local"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
)

// realTable returns the module reading a blocklist table of the real single-node
// store (storage/tables underneath, as in xmppd) and that store, for writes that
// bypass the module as another node's writes do (they arrive through raft and are
// applied to the local table without this node's module seeing them).
func realTable(t testing.TB) (*Module, storage.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := local.Open(ctx, local.Config{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Stop(ctx) })
	if err := modutil.Declare(ctx, st, Table); err != nil {
		t.Fatal(err)
	}
	tab, err := st.Durable(Table)
	if err != nil {
		t.Fatal(err)
	}
	return &Module{tab: tab}, st
}

func apply(t testing.TB, st storage.Store, ops ...storage.Op) {
	t.Helper()
	if err := st.Apply(context.Background(), ops...); err != nil {
		t.Fatal(err)
	}
}

// TestIsBlockedSeesForeignWrites: a list written or cleared by another node (a
// batch applied to the table, not through this module) takes effect at once; nothing
// is cached. Users whose names are prefixes of each other do not see each other's
// lists.
func TestIsBlockedSeesForeignWrites(t *testing.T) {
	m, st := realTable(t)
	bob := jid.MustParse("bob@example.org/phone")
	for _, u := range []string{"al", "alice", "alice2"} {
		if m.HasList(u) || m.IsBlocked(u, bob) {
			t.Fatalf("%s: blocked with an empty table", u)
		}
	}
	// Another user's list whose name extends alice's, and one whose name is a prefix.
	apply(t, st, storage.Put(Table, modutil.Key("alice2", "bob@example.org"), nil),
		storage.Put(Table, modutil.Key("al", "example.org"), nil))
	if m.HasList("alice") || m.IsBlocked("alice", bob) {
		t.Fatal("alice sees alice2's or al's list")
	}
	if !m.HasList("alice2") || !m.IsBlocked("alice2", bob) || !m.IsBlocked("al", bob) {
		t.Fatal("alice2/al lists not seen")
	}
	// Each candidate form of XEP-0191 §3.4, written behind the module's back.
	for _, item := range []string{"bob@example.org/phone", "bob@example.org", "example.org/phone", "example.org"} {
		apply(t, st, storage.Put(Table, modutil.Key("alice", item), nil))
		if !m.HasList("alice") || !m.IsBlocked("alice", bob) {
			t.Fatalf("item %q written by another node not seen", item)
		}
		other := jid.MustParse("carol@other.example/x")
		if m.IsBlocked("alice", other) {
			t.Fatalf("item %q blocks an unrelated JID", item)
		}
		apply(t, st, storage.DeletePrefix(Table, modutil.UserPrefix("alice")))
		if m.HasList("alice") || m.IsBlocked("alice", bob) {
			t.Fatalf("item %q removed by another node still blocks", item)
		}
	}
	if !m.IsBlocked("alice2", bob) {
		t.Fatal("alice's unblock-all touched alice2")
	}
	// A domain/resource item does not block other resources; a bare item blocks all.
	apply(t, st, storage.Put(Table, modutil.Key("alice", "example.org/phone"), nil))
	if m.IsBlocked("alice", jid.MustParse("bob@example.org/tablet")) || !m.IsBlocked("alice", jid.MustParse("example.org/phone")) {
		t.Fatal("domain/resource item")
	}
}

// TestIsBlockedNoAllocWithoutList: the check costs no allocation when the user has
// no block list (the common case on every message), even with other users' lists.
func TestIsBlockedNoAllocWithoutList(t *testing.T) {
	m, st := realTable(t)
	apply(t, st, storage.Put(Table, modutil.Key("carol", "x@example.org"), nil))
	to := jid.MustParse("bob@example.org/phone")
	if n := testing.AllocsPerRun(200, func() {
		if m.IsBlocked("alice", to) {
			t.Fatal("blocked")
		}
	}); n != 0 {
		t.Fatalf("IsBlocked without a list: %v allocations", n)
	}
}

// BenchmarkIsBlocked: no list (the chat benchmark's case) and a list that does not
// match (four lookups).
func BenchmarkIsBlocked(b *testing.B) {
	m, st := realTable(b)
	for i := range 1000 {
		apply(b, st, storage.Put(Table, modutil.Key("user"+string(rune('a'+i%26))+"x", "x@example.org"), nil))
	}
	apply(b, st, storage.Put(Table, modutil.Key("listed", "x@example.org"), nil))
	to := jid.MustParse("bob@example.org/phone")
	for _, user := range []string{"alice", "listed"} {
		b.Run(user, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.IsBlocked(user, to)
			}
		})
	}
}
