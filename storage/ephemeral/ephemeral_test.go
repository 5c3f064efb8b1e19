package ephemeral

import (
	"testing"

	"xedge/storage"
)

func TestMergeAndDropNode(t *testing.T) {
	s := New("a", 2)
	var changes []Change
	s.OnLocalChange(func(c Change) { changes = append(changes, c) })
	tb := s.Table("routes")
	tb.Put("k", []byte("a"))
	s.Merge(Change{Table: "routes", Row: storage.Row{Key: "k", Node: "b", Incarnation: 7, Value: []byte("b")}})
	s.Merge(Change{Table: "routes", Row: storage.Row{Key: "k2", Node: "b", Incarnation: 7, Value: []byte("b2")}})
	// A late change from an older incarnation of b is ignored.
	s.Merge(Change{Table: "routes", Row: storage.Row{Key: "k", Node: "b", Incarnation: 6, Value: []byte("old")}})
	rows := tb.Get("k")
	if len(rows) != 2 || rows[0].Node != "a" || string(rows[1].Value) != "b" {
		t.Fatalf("rows %+v", rows)
	}
	if len(changes) != 1 || changes[0].Row.Node != "a" {
		t.Fatalf("local changes %+v", changes)
	}
	if n := s.DropNode("b", 6); n != 0 {
		t.Fatalf("dropped newer incarnation: %d", n)
	}
	if n := s.DropNode("b", 7); n != 2 {
		t.Fatalf("drop: %d", n)
	}
	if rows := tb.Get("k2"); len(rows) != 0 {
		t.Fatalf("k2 %+v", rows)
	}
	if lr := s.LocalRows(); len(lr) != 1 || lr[0].Row.Key != "k" {
		t.Fatalf("local rows %+v", lr)
	}
	if info := s.Info(); info[0].Keys != 1 || info[0].Bytes != 2 {
		t.Fatalf("info %+v", info)
	}
}

func TestSetIncarnationRetags(t *testing.T) {
	s := New("a", 0)
	s.Table("x").Put("k", []byte("v"))
	s.Merge(Change{Table: "x", Row: storage.Row{Key: "k", Node: "b", Incarnation: 4}})
	s.SetIncarnation(9)
	rows := s.Table("x").Get("k")
	if rows[0].Incarnation != 9 || rows[1].Incarnation != 4 || s.Incarnation() != 9 {
		t.Fatalf("%+v", rows)
	}
}
