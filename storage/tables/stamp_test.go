package tables

import (
	"testing"

	"xedge/storage"
)

// A table's stamp stays == while nothing is written to it (reads, writes to
// another table) and differs after every write to it.
func TestStampChangesOnlyWithTheTable(t *testing.T) {
	st := New()
	for _, n := range []string{"a", "b"} {
		if err := st.Apply(DeclareCommand(storage.TableSpec{Name: n})); err != nil {
			t.Fatal(err)
		}
	}
	a, err := st.Table("a")
	if err != nil {
		t.Fatal(err)
	}
	stamp := func() any { return storage.StampOf(a) }
	s0 := stamp()
	if s0 == nil {
		t.Fatal("tables' handle does not implement storage.Stamped")
	}
	if _, _, err := a.Get("k"); err != nil || stamp() != s0 {
		t.Fatal("a read changed the stamp")
	}
	if err := st.Apply(ApplyCommand(storage.Put("b", "k", []byte("v")))); err != nil || stamp() != s0 {
		t.Fatalf("a write to another table changed the stamp (%v)", err)
	}
	if err := st.Apply(ApplyCommand(storage.Put("a", "k", []byte("v")))); err != nil {
		t.Fatal(err)
	}
	s1 := stamp()
	if s1 == s0 {
		t.Fatal("a write to the table left the stamp as it was")
	}
	if err := st.Apply(ApplyCommand(storage.Delete("a", "k"))); err != nil || stamp() == s1 {
		t.Fatalf("a delete left the stamp as it was (%v)", err)
	}
	missing := handle{s: st, name: "nope"}
	if x := storage.StampOf(missing); x == storage.StampOf(missing) {
		t.Fatal("a missing table's stamps compare equal")
	}
}
