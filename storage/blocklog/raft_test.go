package blocklog

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/tables"
)

// fsm wraps tables.State as a raft FSM, the way the replicated store does.
type fsm struct{ s *tables.State }

func (f *fsm) Apply(l *raft.Log) interface{} {
	c, err := tables.DecodeCommand(l.Data)
	if err != nil {
		return err
	}
	return f.s.Apply(c)
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnap{v: f.s.View()}, nil }
func (f *fsm) Restore(rc io.ReadCloser) error      { defer rc.Close(); return f.s.Restore(rc) }

type fsmSnap struct{ v *tables.View }

func (s *fsmSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := s.v.WriteTo(sink, tables.AllData); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (s *fsmSnap) Release() {}

// TestRealRaftOnBlocklog runs hashicorp/raft (one voter, in-memory transport)
// with blocklog as its LogStore, StableStore and SnapshotStore and
// tables.State as its FSM: bootstrap, 300 commands, a user snapshot with log
// compaction, shutdown, and a restart from the device that restores the state.
func TestRealRaftOnBlocklog(t *testing.T) {
	dev := blockdev.NewMem(2<<20, 512)
	start := func() (*raft.Raft, *tables.State, *Store) {
		st, err := Open(dev, Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		cfg := raft.DefaultConfig()
		cfg.LocalID = "n1"
		cfg.HeartbeatTimeout = 50 * time.Millisecond
		cfg.ElectionTimeout = 50 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.TrailingLogs = 20
		cfg.SnapshotThreshold = 1 << 30 // only the explicit snapshot below
		cfg.Logger = hclog.NewNullLogger()
		_, trans := raft.NewInmemTransport("n1")
		state := tables.New()
		r, err := raft.NewRaft(cfg, &fsm{s: state}, st, st, st, trans)
		if err != nil {
			t.Fatal(err)
		}
		return r, state, st
	}
	waitLeader := func(r *raft.Raft) {
		for i := 0; i < 200 && r.State() != raft.Leader; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if r.State() != raft.Leader {
			t.Fatal("no leader")
		}
	}
	r, state, st := start()
	err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}).Error()
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(r)
	apply := func(c tables.Command) {
		t.Helper()
		f := r.Apply(c.Encode(nil), time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		if resp, ok := f.Response().(error); ok && resp != nil {
			t.Fatal(resp)
		}
	}
	apply(tables.DeclareCommand(storage.TableSpec{Name: "t"}))
	for i := 0; i < 300; i++ {
		apply(tables.ApplyCommand(storage.Put("t", fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i)))))
	}
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 310; i++ {
		apply(tables.ApplyCommand(storage.Put("t", fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i)))))
	}
	if first, _ := st.FirstIndex(); first <= 1 {
		t.Fatalf("log not compacted after the snapshot: first index %d", first)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if st.Err() != nil {
		t.Fatal(st.Err())
	}
	if info := state.Info(); info[0].Keys != 310 {
		t.Fatalf("before restart: %+v", info)
	}

	r, state, _ = start()
	defer r.Shutdown()
	waitLeader(r)
	if err := r.Barrier(time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if info := state.Info(); len(info) != 1 || info[0].Keys != 310 {
		t.Fatalf("after restart: %+v", info)
	}
	term, _ := st.GetUint64([]byte("CurrentTerm"))
	if term == 0 {
		t.Fatal("raft's term was not kept in the stable store")
	}
}
