package tables

import (
	"bytes"
	"testing"

	"xedge/storage"
)

// Corrupt input must give an error, never a panic or a huge allocation.
// Seeds run as unit tests; `go test -fuzz FuzzDecodeCommand ./storage/tables`
// explores further.
func FuzzDecodeCommand(f *testing.F) {
	f.Add(ApplyCommand(storage.Put("t", "k", []byte("v")).If(storage.CondAbsent), storage.DeletePrefix("t", "p")).Encode(nil))
	f.Add(DeclareCommand(storage.TableSpec{Name: "t", Copy: storage.RAM}).Encode(nil))
	f.Add([]byte{1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	marked := Command{Kind: CmdApply, Ops: []storage.Op{storage.Put("t", "k", []byte("v")), storage.Put("r", "k", []byte("v"))},
		Marks: []Mark{MarkDisc, MarkRAM}}
	f.Add(marked.Encode(nil))
	red, _ := marked.Redacted()
	f.Add(red.Encode(nil))
	f.Fuzz(func(t *testing.T, p []byte) {
		c, err := DecodeCommand(p)
		if err != nil {
			return
		}
		// What decodes must re-encode to the same bytes and apply without panic.
		if q := c.Encode(nil); !bytes.Equal(p, q) {
			t.Fatalf("re-encode differs")
		}
		s := New()
		s.Apply(DeclareCommand(storage.TableSpec{Name: "t"}))
		s.Apply(c)
	})
}

func FuzzReadSnapshot(f *testing.F) {
	s := New()
	s.Apply(DeclareCommand(storage.TableSpec{Name: "t"}))
	s.Apply(ApplyCommand(storage.Put("t", "a", []byte("1")), storage.Put("t", "b", nil)))
	var buf bytes.Buffer
	s.View().WriteTo(&buf, AllData)
	f.Add(buf.Bytes())
	f.Add([]byte("XTBS\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, p []byte) {
		ReadSnapshot(bytes.NewReader(p))
	})
}
