package tables

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"xedge/storage"
)

func marked(ops []storage.Op, marks ...Mark) Command {
	return Command{Kind: CmdApply, Ops: ops, Marks: marks}
}

func TestMarkedCommandEncoding(t *testing.T) {
	c := marked([]storage.Op{storage.Put("d", "k", []byte("v")).If(storage.CondAbsent), storage.Put("r", "secret", []byte("RAMVALUE"))},
		MarkDisc, MarkRAM)
	b := c.Encode(nil)
	got, err := DecodeCommand(b)
	if err != nil || !reflect.DeepEqual(got.Marks, c.Marks) || got.Ops[1].Key != "secret" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	red, changed := c.Redacted()
	if !changed || red.Marks[1] != MarkRedacted || red.Ops[1].Key != "" || red.Ops[1].Table != "r" {
		t.Fatalf("redacted: %+v", red)
	}
	if c.Ops[1].Key != "secret" {
		t.Fatal("Redacted changed its receiver")
	}
	rb := red.Encode(nil)
	if bytes.Contains(rb, []byte("RAMVALUE")) || bytes.Contains(rb, []byte("secret")) {
		t.Fatal("redacted encoding still carries the RAM op")
	}
	if _, err := DecodeCommand(rb); err != nil {
		t.Fatal(err)
	}
	if _, changed := red.Redacted(); changed {
		t.Fatal("redacting twice changed something")
	}
	// Non-canonical forms are refused: a redacted op with content, an
	// unknown mark, a marked Declare.
	bad := marked([]storage.Op{storage.Put("r", "k", nil)}, MarkRedacted).Encode(nil)
	if _, err := DecodeCommand(bad); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("redacted op with a key: %v", err)
	}
	bad = marked([]storage.Op{storage.Put("r", "", nil)}, 4).Encode(nil)
	if _, err := DecodeCommand(bad); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("mark 4: %v", err)
	}
	decl := DeclareCommand(storage.TableSpec{Name: "x"}).Encode(nil)
	decl[1] = cmdVersionMarked
	if _, err := DecodeCommand(decl); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("marked declare: %v", err)
	}
	// An unmarked command keeps the version 1 encoding.
	if b := ApplyCommand(storage.Put("d", "k", nil)).Encode(nil); b[1] != cmdVersion {
		t.Fatalf("unmarked apply encoded as version %d", b[1])
	}
}

func TestApplyWithMarks(t *testing.T) {
	s := New()
	s.Apply(DeclareCommand(storage.TableSpec{Name: "d"}))
	s.Apply(DeclareCommand(storage.TableSpec{Name: "r", Copy: storage.RAM}))
	// A mark that disagrees with the table refuses the whole batch.
	err := s.ApplyWith(marked([]storage.Op{storage.Put("d", "a", nil), storage.Put("r", "a", nil)}, MarkDisc, MarkDisc), false)
	if !errors.Is(err, ErrCopyMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if n, _ := mustHandle(t, s, "d").Count(""); n != 0 {
		t.Fatal("a refused batch was applied")
	}
	// Disc writes with a condition on a RAM key are refused.
	err = s.ApplyWith(marked([]storage.Op{storage.Put("d", "a", nil), storage.Put("r", "a", nil).If(storage.CondAbsent)}, MarkDisc, MarkRAM), false)
	if !errors.Is(err, ErrRAMCondition) {
		t.Fatalf("ram condition: %v", err)
	}
	// RAM-only conditional batches and disc conditions are fine.
	if err := s.ApplyWith(marked([]storage.Op{storage.Put("r", "a", []byte("1")).If(storage.CondAbsent)}, MarkRAM), false); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyWith(marked([]storage.Op{storage.Put("d", "a", []byte("1")).If(storage.CondAbsent), storage.Put("r", "b", nil)}, MarkDisc, MarkRAM), false); err != nil {
		t.Fatal(err)
	}
	// skipRAM applies the disc ops only; redacted ops write nothing.
	if err := s.ApplyWith(marked([]storage.Op{storage.Put("d", "c", nil), storage.Put("r", "c", nil)}, MarkDisc, MarkRAM), true); err != nil {
		t.Fatal(err)
	}
	red, _ := marked([]storage.Op{storage.Put("d", "e", nil), storage.Put("r", "e", nil)}, MarkDisc, MarkRAM).Redacted()
	if err := s.ApplyWith(red, false); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"d/a", "d/c", "d/e", "r/a", "r/b"} {
		if _, ok, _ := mustHandle(t, s, k[:1]).Get(k[2:]); !ok {
			t.Fatalf("%s missing", k)
		}
	}
	for _, k := range []string{"r/c", "r/e"} {
		if _, ok, _ := mustHandle(t, s, k[:1]).Get(k[2:]); ok {
			t.Fatalf("%s applied", k)
		}
	}
}

func mustHandle(t *testing.T, s *State, name string) storage.Table {
	t.Helper()
	h, err := s.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCopySnapshotAndInstallRows(t *testing.T) {
	s := New()
	s.Apply(DeclareCommand(storage.TableSpec{Name: "d"}))
	s.Apply(DeclareCommand(storage.TableSpec{Name: "r", Copy: storage.RAM}))
	s.Apply(ApplyCommand(storage.Put("d", "k", []byte("DISCVAL")), storage.Put("r", "k", []byte("RAMVAL"))))
	var full, red bytes.Buffer
	if _, err := s.View().WriteTo(&full, AllData); err != nil {
		t.Fatal(err)
	}
	if _, err := CopySnapshot(bytes.NewReader(full.Bytes()), &red, DiscData); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(red.Bytes(), []byte("RAMVAL")) || !bytes.Contains(red.Bytes(), []byte("DISCVAL")) {
		t.Fatal("redacted snapshot content wrong")
	}
	var want bytes.Buffer
	s.View().WriteTo(&want, DiscData)
	if !bytes.Equal(want.Bytes(), red.Bytes()) {
		t.Fatal("CopySnapshot differs from WriteTo with the same filter")
	}
	bad := append([]byte(nil), full.Bytes()...)
	bad[len(bad)-1] ^= 1
	if _, err := CopySnapshot(bytes.NewReader(bad), &bytes.Buffer{}, DiscData); err == nil {
		t.Fatal("bad checksum accepted")
	}
	r, err := ReadSnapshot(&red)
	if err != nil {
		t.Fatal(err)
	}
	if spec, ok := r.Spec("r"); !ok || spec.Copy != storage.RAM {
		t.Fatal("RAM spec lost")
	}
	img, _ := ReadSnapshot(bytes.NewReader(full.Bytes()))
	r.InstallRows(img, func(sp storage.TableSpec) bool { return sp.Copy == storage.RAM })
	if v, ok, _ := mustHandle(t, r, "r").Get("k"); !ok || string(v) != "RAMVAL" {
		t.Fatal("InstallRows did not install")
	}
}
