package blocklog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"testing"

	"github.com/hashicorp/raft"

	"xedge/storage/blockdev"
)

// The crash matrix: a raft-like workload (appends, term/vote sets, suffix
// deletes, compactions, two snapshots, several passes over the ring) runs on a
// Fault device that fails at write N, for every N and every fault mode. After
// the "crash" the store is reopened on the surviving bytes; its state must be
// exactly the state after the last acknowledged operation, or after the one
// that was in flight. Then one more append must survive another reopen.

type mstate struct {
	logs    map[uint64]raft.Log
	kv      map[string]string
	snapIdx uint64
	snap    string
}

func (m mstate) clone() mstate {
	c := mstate{logs: make(map[uint64]raft.Log, len(m.logs)), kv: make(map[string]string, len(m.kv)), snapIdx: m.snapIdx, snap: m.snap}
	for k, v := range m.logs {
		c.logs[k] = v
	}
	for k, v := range m.kv {
		c.kv[k] = v
	}
	return c
}

type op struct {
	name string
	do   func(s *Store) error
}

// workload returns the operations and the model state after each prefix.
func workload() ([]op, []mstate) {
	r := rand.New(rand.NewSource(1))
	m := mstate{logs: map[uint64]raft.Log{}, kv: map[string]string{}}
	states := []mstate{m.clone()}
	var ops []op
	add := func(o op, apply func(*mstate)) {
		ops = append(ops, o)
		apply(&m)
		states = append(states, m.clone())
	}
	idx, term := uint64(0), uint64(1)
	first := func() uint64 {
		f := uint64(0)
		for i := range m.logs {
			if f == 0 || i < f {
				f = i
			}
		}
		return f
	}
	delRange := func(lo, hi uint64) {
		add(op{fmt.Sprintf("delete %d-%d", lo, hi), func(s *Store) error { return s.DeleteRange(lo, hi) }},
			func(m *mstate) {
				for i := lo; i <= hi; i++ {
					delete(m.logs, i)
				}
			})
	}
	for b := 1; b <= 200; b++ {
		var batch []*raft.Log
		for n := 1 + r.Intn(3); n > 0; n-- {
			idx++
			d := make([]byte, r.Intn(400))
			r.Read(d)
			batch = append(batch, &raft.Log{Index: idx, Term: term, Type: raft.LogCommand, Data: d})
		}
		add(op{fmt.Sprintf("store %d-%d", batch[0].Index, idx), func(s *Store) error { return s.StoreLogs(batch) }},
			func(m *mstate) {
				for _, l := range batch {
					m.logs[l.Index] = *l
				}
			})
		if b%10 == 0 {
			term++
			t, cand := term, fmt.Sprintf("node%d", b)
			add(op{"set term", func(s *Store) error { return s.SetUint64([]byte("CurrentTerm"), t) }},
				func(m *mstate) {
					var v [8]byte
					binary.BigEndian.PutUint64(v[:], t)
					m.kv["CurrentTerm"] = string(v[:])
				})
			add(op{"set vote", func(s *Store) error { return s.Set([]byte("LastVoteCand"), []byte(cand)) }},
				func(m *mstate) { m.kv["LastVoteCand"] = cand })
		}
		if b == 75 { // a follower truncating a conflicting suffix
			delRange(idx-1, idx)
			idx -= 2
		}
		if b == 90 || b == 170 {
			data := make([]byte, 3000+r.Intn(3000))
			r.Read(data)
			si, st := idx, term
			add(op{fmt.Sprintf("snapshot %d", si), func(s *Store) error {
				sink, err := s.Create(raft.SnapshotVersionMax, si, st, raft.Configuration{}, 1, nil)
				if err != nil {
					return err
				}
				for p := data; len(p) > 0; p = p[min(len(p), 700):] {
					if _, err := sink.Write(p[:min(len(p), 700)]); err != nil {
						return err
					}
				}
				return sink.Close()
			}}, func(m *mstate) { m.snapIdx, m.snap = si, string(data) })
		}
		if b%30 == 0 {
			delRange(first(), idx-10)
		}
	}
	return ops, states
}

func readState(t *testing.T, s *Store) mstate {
	t.Helper()
	m := mstate{logs: map[uint64]raft.Log{}, kv: map[string]string{}}
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if (f == 0) != (l == 0) || f > l {
		t.Fatalf("first %d last %d", f, l)
	}
	for i := f; f != 0 && i <= l; i++ {
		var e raft.Log
		if err := s.GetLog(i, &e); err == nil {
			e.AppendedAt = e.AppendedAt.UTC()
			m.logs[i] = e
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteCand"} {
		if v, err := s.Get([]byte(k)); err == nil {
			m.kv[k] = string(v)
		}
	}
	list, _ := s.List()
	if len(list) > 0 {
		_, rc, err := s.Open(list[0].ID)
		if err != nil {
			t.Fatalf("open snapshot: %v", err)
		}
		b, _ := io.ReadAll(rc)
		m.snapIdx, m.snap = list[0].Index, string(b)
	}
	return m
}

func diff(a, b mstate) string {
	if a.snapIdx != b.snapIdx || a.snap != b.snap {
		return fmt.Sprintf("snapshot %d (%d bytes) vs %d (%d bytes)", a.snapIdx, len(a.snap), b.snapIdx, len(b.snap))
	}
	if len(a.kv) != len(b.kv) {
		return fmt.Sprintf("kv %v vs %v", a.kv, b.kv)
	}
	for k, v := range a.kv {
		if b.kv[k] != v {
			return fmt.Sprintf("kv %q: %q vs %q", k, v, b.kv[k])
		}
	}
	if len(a.logs) != len(b.logs) {
		return fmt.Sprintf("%d vs %d entries (%s vs %s)", len(a.logs), len(b.logs), span(a), span(b))
	}
	for i, e := range a.logs {
		o, ok := b.logs[i]
		if !ok || o.Term != e.Term || o.Type != e.Type || !bytes.Equal(o.Data, e.Data) {
			return fmt.Sprintf("entry %d differs", i)
		}
	}
	return ""
}

func span(m mstate) string {
	var ks []uint64
	for k := range m.logs {
		ks = append(ks, k)
	}
	if len(ks) == 0 {
		return "[]"
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return fmt.Sprintf("[%d..%d]", ks[0], ks[len(ks)-1])
}

const (
	crashDevSize = 160 << 10
	crashLog     = 48 << 10
)

// runWorkload runs ops on dev until the store loses its device; it returns
// how many ops were acknowledged (returned nil with the device still good).
func runWorkload(t *testing.T, dev *blockdev.Fault, ops []op) (acked, wraps int) {
	s, err := Open(dev, Options{LogBytes: crashLog, Logger: quiet})
	if err != nil {
		return 0, 0 // the fault hit the format
	}
	for i, o := range ops {
		prev := s.tail
		err := o.do(s)
		if s.tail < prev {
			wraps++
		}
		if s.Err() != nil {
			return i, wraps
		}
		if err != nil {
			t.Fatalf("op %d (%s): %v", i, o.name, err)
		}
	}
	return len(ops), wraps
}

func TestCrashMatrix(t *testing.T) {
	ops, states := workload()
	// A fault-free run counts the writes and checks the workload fits.
	base := blockdev.NewMem(crashDevSize, 512)
	clean := blockdev.NewFault(base, blockdev.FaultConfig{})
	if n, wraps := runWorkload(t, clean, ops); n != len(ops) || wraps < 2 {
		t.Fatalf("fault-free run: %d of %d ops, %d passes over the ring (want all, and at least 2)", n, len(ops), wraps)
	}
	writes, syncs := clean.Writes(), clean.Syncs()
	s, err := Open(base, Options{LogBytes: crashLog, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(states[len(ops)], readState(t, s)); d != "" {
		t.Fatalf("fault-free reopen: %s", d)
	}
	t.Logf("%d ops, %d writes, %d syncs; crashing at every write (drop, tear, error) and every sync", len(ops), writes, syncs)
	step := 1
	if testing.Short() {
		step = 7
	}
	for _, mode := range []blockdev.FaultMode{blockdev.Drop, blockdev.Tear, blockdev.Error, blockdev.LostSync} {
		total := writes
		if mode == blockdev.LostSync {
			total = syncs
		}
		for n := 1; n <= total; n += step {
			base := blockdev.NewMem(crashDevSize, 512)
			f := blockdev.NewFault(base, blockdev.FaultConfig{FailAt: n, Mode: mode, Seed: int64(n)*3 + int64(mode)})
			acked, _ := runWorkload(t, f, ops)
			if err := f.Crash(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(base, Options{LogBytes: crashLog, Logger: quiet})
			if err != nil {
				t.Fatalf("%v at write %d (after op %d): reopen: %v", mode, n, acked, err)
			}
			got := readState(t, s)
			d1 := diff(states[acked], got)
			if d1 != "" && acked < len(ops) {
				if d2 := diff(states[acked+1], got); d2 == "" {
					d1 = ""
				} else {
					d1 += "; or with op " + ops[acked].name + ": " + d2
				}
			}
			if d1 != "" {
				t.Fatalf("%v at write %d, %d ops acknowledged, recovery %+v: %s", mode, n, acked, s.Recovery(), d1)
			}
			// The recovered store keeps working across another reopen.
			l, _ := s.LastIndex()
			if err := s.StoreLogs([]*raft.Log{{Index: l + 1, Term: 99, Data: []byte("after")}}); err != nil || s.Err() != nil {
				t.Fatalf("%v at write %d: append after recovery: %v %v", mode, n, err, s.Err())
			}
			s2, err := Open(base, Options{LogBytes: crashLog, Logger: quiet})
			if err != nil {
				t.Fatalf("%v at write %d: second reopen: %v", mode, n, err)
			}
			var e raft.Log
			if err := s2.GetLog(l+1, &e); err != nil || string(e.Data) != "after" {
				t.Fatalf("%v at write %d: append after recovery lost: %v", mode, n, err)
			}
		}
	}
}

// The re-persist crash matrix: the first 120 operations of the workload reach
// the device, the rest run while it is lost (RAM only); then Repersist runs on
// a Fault device that fails at write N (every N, every mode), and the device
// is reopened on the surviving bytes. It must hold the state from before the
// loss (the rewrite had not started), or the complete RAM state (the rewrite
// finished; required when Repersist returned nil), or say Partial — never
// something else dressed as a consistent state. A partial layout then wipes
// cleanly.
func TestRepersistCrashMatrix(t *testing.T) {
	ops, states := workload()
	const before = 120
	run := func(cfg blockdev.FaultConfig) (base *blockdev.Mem, f *blockdev.Fault, err error) {
		base = blockdev.NewMem(crashDevSize, 512)
		sw := &blockdev.Switchable{BlockDevice: base}
		s, err := Open(sw, Options{LogBytes: crashLog, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range ops {
			if i == before {
				sw.SetDown(true)
			}
			if err := o.do(s); err != nil {
				t.Fatalf("op %d (%s): %v", i, o.name, err)
			}
		}
		if s.Err() == nil {
			t.Fatal("loss not latched")
		}
		f = blockdev.NewFault(base, cfg)
		sw.Replace(f)
		sw.SetDown(false)
		return base, f, s.Repersist()
	}
	base, clean, err := run(blockdev.FaultConfig{})
	if err != nil {
		t.Fatalf("fault-free re-persist: %v", err)
	}
	writes, syncs := clean.Writes(), clean.Syncs()
	s, err := Open(base, Options{LogBytes: crashLog, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(states[len(ops)], readState(t, s)); d != "" || s.Recovery().Partial || s.Generation() != 2 {
		t.Fatalf("fault-free: %s, %+v", d, s.Recovery())
	}
	t.Logf("re-persist: %d writes, %d syncs; crashing at every one", writes, syncs)
	outcomes := map[string]int{}
	for _, mode := range []blockdev.FaultMode{blockdev.Drop, blockdev.Tear, blockdev.Error, blockdev.LostSync} {
		total := writes
		if mode == blockdev.LostSync {
			total = syncs
		}
		for n := 1; n <= total; n++ {
			base, f, rerr := run(blockdev.FaultConfig{FailAt: n, Mode: mode, Seed: int64(n)*5 + int64(mode)})
			if err := f.Crash(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(base, Options{LogBytes: crashLog, Logger: quiet})
			if err != nil {
				t.Fatalf("%v at write %d: reopen: %v", mode, n, err)
			}
			got := readState(t, s)
			switch {
			case s.Recovery().Partial:
				if rerr == nil {
					t.Fatalf("%v at write %d: Repersist returned nil but the layout is partial", mode, n)
				}
				outcomes["partial"]++
				w, err := Open(base, Options{LogBytes: crashLog, Logger: quiet, Wipe: true})
				if err != nil || w.Recovery().Partial || w.Generation() < 3 {
					t.Fatalf("%v at write %d: wipe of a partial layout: %v", mode, n, err)
				}
			case diff(states[len(ops)], got) == "":
				outcomes["new"]++
			case diff(states[before], got) == "" && rerr != nil:
				outcomes["old"]++
			default:
				t.Fatalf("%v at write %d (repersist: %v): neither partial, nor the old or the new state: old: %s; new: %s",
					mode, n, rerr, diff(states[before], got), diff(states[len(ops)], got))
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
}
