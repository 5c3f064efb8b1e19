package roster

import (
	"context"
	"testing"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
)

// TestNextVersionUnique: two nodes that change the same roster at the same version
// write different versions (the presence module's snapshots rely on it), never the
// empty version, and follow on from versions of the older "<epoch>-<n>" form.
func TestNextVersionUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, cur := range []string{EmptyVersion, "1-00112233aabbccdd", "deadbeef-7", "garbage"} {
		for range 1000 {
			v := nextVersion(cur)
			if v == EmptyVersion || v == cur || seen[v] {
				t.Fatalf("nextVersion(%q) = %q: not new", cur, v)
			}
			seen[v] = true
		}
	}
	if v := nextVersion("41-00112233aabbccdd"); v[:3] != "42-" {
		t.Fatalf("counter not followed: %q", v)
	}
}

func TestVersionIs(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if !m.VersionIs("alice", EmptyVersion) || m.VersionIs("alice", "1-x") {
		t.Fatal("empty roster")
	}
	if err := h.Store().Apply(context.Background(), storage.Put(TableVersion, "alice", []byte("1-x"))); err != nil {
		t.Fatal(err)
	}
	if !m.VersionIs("alice", "1-x") || m.VersionIs("alice", EmptyVersion) || m.Version("alice") != "1-x" {
		t.Fatal("changed roster")
	}
}
