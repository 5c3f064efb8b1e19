package blocklog

import (
	"testing"

	"github.com/hashicorp/raft"
)

// Corrupt superblocks and frame payloads give errors, never panics.
func FuzzDecodeSuperblock(f *testing.F) {
	sb := &superblock{seq: 3, nonce: 9, bs: 512, kv: map[string][]byte{"CurrentTerm": {0, 0, 0, 0, 0, 0, 0, 5}}}
	b, _ := sb.encode(4096)
	f.Add(b)
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) < 132 {
			return
		}
		decodeSuperblock(p)
	})
}

func FuzzDecodeLogs(f *testing.F) {
	f.Add(encodeLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("x"), Extensions: []byte("e")}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, p []byte) {
		decodeLogs(p)
	})
}
