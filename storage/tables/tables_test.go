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
