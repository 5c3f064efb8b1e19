package tables

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"xedge/storage"
)

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		DeclareCommand(storage.TableSpec{Name: "users", Copy: storage.RAM}),
		{Kind: CmdClear, Spec: storage.TableSpec{Name: "users"}},
		ApplyCommand(storage.Put("u", "k", []byte("v")).If(storage.CondAbsent), storage.Delete("u", "x"),
			storage.DeletePrefix("u", "p"), storage.Put("u", "", []byte{})),
	}
	for _, c := range cmds {
		b := c.Encode(nil)
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", c, err)
		}
		for i := range got.Ops { // nil and empty values are the same
			if len(got.Ops[i].Value) == 0 {
				got.Ops[i].Value = nil
			}
			if len(c.Ops[i].Value) == 0 {
				c.Ops[i].Value = nil
			}
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip: %+v != %+v", got, c)
		}
		for n := 0; n < len(b); n++ {
			if _, err := DecodeCommand(b[:n]); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("truncated to %d: %v", n, err)
			}
		}
	}
}

func TestSnapshotRoundTripAndCorruption(t *testing.T) {
	s := New()
	must(t, s.Apply(DeclareCommand(storage.TableSpec{Name: "d"})))
	must(t, s.Apply(DeclareCommand(storage.TableSpec{Name: "r", Copy: storage.RAM})))
	for i := 0; i < 50; i++ {
		must(t, s.Apply(ApplyCommand(storage.Put("d", fmt.Sprint(i), []byte{byte(i)}), storage.Put("r", fmt.Sprint(i), nil))))
	}
	v := s.View()
	must(t, s.Apply(ApplyCommand(storage.DeletePrefix("d", ""))))
	var buf bytes.Buffer
	if _, err := v.WriteTo(&buf, DiscData); err != nil {
		t.Fatal(err)
	}
	r := New()
	must(t, r.Restore(bytes.NewReader(buf.Bytes())))
	info := r.Info()
	if len(info) != 2 || info[0].Keys != 50 || info[1].Keys != 0 || info[1].Copy != "ram" {
		t.Fatalf("restored (view taken before DeletePrefix): %+v", info)
	}
	if info[0].Bytes != 140 || s.Info()[0].Bytes != 0 { // 90 key bytes + 50 value bytes
		t.Fatalf("bytes restored %d, after DeletePrefix %d", info[0].Bytes, s.Info()[0].Bytes)
	}
	b := buf.Bytes()
	for i := 0; i < len(b); i += 7 {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		if err := r.Restore(bytes.NewReader(c)); err == nil {
			t.Fatalf("flip at %d not detected", i)
		}
	}
	if err := r.Restore(bytes.NewReader(b[:len(b)-1])); err == nil {
		t.Fatal("truncated snapshot accepted")
	}
	if n := r.Info()[0].Keys; n != 50 {
		t.Fatalf("failed restore changed state: %d", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLimitsRejectedBeforeLogging(t *testing.T) {
	s := New()
	must(t, s.Apply(DeclareCommand(storage.TableSpec{Name: "t"})))
	big := string(make([]byte, maxKeyLen+1))
	if err := s.Check([]storage.Op{storage.Put("t", big, nil)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("long key: %v", err)
	}
	if err := s.Apply(ApplyCommand(storage.Put("t", "k", make([]byte, maxValueLen+1)))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big value: %v", err)
	}
	// At the limit it round-trips.
	c := ApplyCommand(storage.Put("t", string(make([]byte, maxKeyLen)), nil))
	if _, err := DecodeCommand(c.Encode(nil)); err != nil {
		t.Fatal(err)
	}
}

// GetShared returns the stored value without a copy, and neither it nor a key
// Scan passed changes when the same key is written again, deleted, or the
// state restored from a snapshot: what mam keeps for the length of a query.
func TestSharedReadsStayAsTheyWere(t *testing.T) {
	s := New()
	must(t, s.Apply(DeclareCommand(storage.TableSpec{Name: "t"})))
	val := []byte("first")
	must(t, s.Apply(ApplyCommand(storage.Put("t", "k1", val), storage.Put("t", "k2", []byte("two")))))
	val[0] = 'X' // the caller's buffer is not what was stored
	tab, err := s.Table("t")
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := storage.GetShared(tab, "k1")
	if err != nil || !ok || string(got) != "first" {
		t.Fatalf("GetShared: %q, %v, %v", got, ok, err)
	}
	if _, isShared := tab.(storage.SharedReader); !isShared {
		t.Fatal("the tables' handle is not a SharedReader")
	}
	var keys []string
	must(t, tab.Scan("k", func(k string, _ []byte) bool { keys = append(keys, k); return true }))
	must(t, s.Apply(ApplyCommand(storage.Put("t", "k1", []byte("second")), storage.Delete("t", "k2"))))
	var snap bytes.Buffer
	if _, err := s.View().WriteTo(&snap, AllData); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	must(t, s.Apply(ApplyCommand(storage.Put("t", "k1", []byte("third!")))))
	if string(got) != "first" {
		t.Fatalf("a shared value changed to %q", got)
	}
	if len(keys) != 2 || keys[0] != "k1" || keys[1] != "k2" {
		t.Fatalf("scanned keys changed: %q", keys)
	}
	if now, _, _ := storage.GetShared(tab, "k1"); string(now) != "third!" {
		t.Fatalf("after the writes: %q", now)
	}
}
