package replicated

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"sync"

	"github.com/hashicorp/raft"

	"xedge/storage/tables"
)

// A raft log entry's payload is one tag byte and a body:
//
//	'T' + tables.Command encoding (Declare / Apply batches, storage/tables)
//	'M' + JSON map[raft ID]member (the leader's member list)
const (
	entryTables  = byte('T')
	entryMembers = byte('M')
)

// member is the leader's view of one raft server, replicated through the log
// so that every node can show it (`xmppctl tables`, degraded-ram mode).
type member struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Storage string `json:"storage"` // "durable" or "ram-only"
	Witness bool   `json:"witness,omitempty"`
}

// applyResult is what FSM.Apply returns through raft's ApplyFuture.
type applyResult struct {
	err error
}

// fsm is the raft FSM: the durable tables (a tables.State, shared with the
// single-node store) plus the member list and the applied index.
type fsm struct {
	state *tables.State

	mu      sync.Mutex
	members map[string]member // raft server ID -> member
	applied uint64
	cond    *sync.Cond // broadcast when applied advances
	// results of recent entries, so a leader that lost leadership while
	// committing can learn whether its entry made it (and its outcome).
	results map[uint64]entryResult
}

type entryResult struct {
	sum uint64
	err error
}

const keepResults = 4096

func newFSM() *fsm {
	f := &fsm{state: tables.New(), members: map[string]member{}, results: map[uint64]entryResult{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func encodeTables(c tables.Command) []byte { return c.Encode([]byte{entryTables}) }

func encodeMembers(m map[string]member) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("replicated: encode members: %w", err)
	}
	return append([]byte{entryMembers}, b...), nil
}

// Apply implements raft.FSM. Conditions are checked inside tables.State.Apply,
// so every node decides the same way.
func (f *fsm) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		f.advance(l.Index, entryResult{}, false)
		return nil
	}
	res := f.apply(l)
	f.advance(l.Index, entryResult{sum: checksum(l.Data), err: res.err}, true)
	return res
}

func checksum(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

// result returns the outcome of the entry at index, if still remembered.
func (f *fsm) result(index uint64) (entryResult, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.results[index]
	return r, ok
}

func (f *fsm) apply(l *raft.Log) applyResult {
	switch l.Data[0] {
	case entryTables:
		cmd, err := tables.DecodeCommand(l.Data[1:])
		if err != nil {
			return applyResult{err: fmt.Errorf("replicated: decode entry %d: %w", l.Index, err)}
		}
		return applyResult{err: f.state.Apply(cmd)}
	case entryMembers:
		m := map[string]member{}
		if err := json.Unmarshal(l.Data[1:], &m); err != nil {
			return applyResult{err: fmt.Errorf("replicated: decode entry %d: %w", l.Index, err)}
		}
		f.mu.Lock()
		f.members = m
		f.mu.Unlock()
		return applyResult{}
	}
	return applyResult{err: fmt.Errorf("replicated: unknown entry tag %q at %d", l.Data[0], l.Index)}
}

func (f *fsm) advance(index uint64, r entryResult, keep bool) {
	f.mu.Lock()
	if index > f.applied {
		f.applied = index
	}
	if keep {
		f.results[index] = r
		if index%1024 == 0 && len(f.results) > keepResults {
			for i := range f.results {
				if i+keepResults < index {
					delete(f.results, i)
				}
			}
		}
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// waitApplied blocks until index is applied or done is closed.
func (f *fsm) waitApplied(index uint64, done <-chan struct{}) bool {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
			f.mu.Lock()
			f.cond.Broadcast()
			f.mu.Unlock()
		case <-stop:
		}
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.applied < index {
		select {
		case <-done:
			return false
		default:
		}
		f.cond.Wait()
	}
	return true
}

func (f *fsm) appliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

func (f *fsm) membersCopy() map[string]member {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]member, len(f.members))
	for k, v := range f.members {
		m[k] = v
	}
	return m
}

// Snapshot format: u32 length + member list JSON, then a tables snapshot with
// every table's rows (RAM tables too: new members need them).
type fsmSnapshot struct {
	view    *tables.View
	members []byte
}

// Snapshot implements raft.FSM; taking the view is O(1).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	m, err := json.Marshal(f.members)
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("replicated: snapshot members: %w", err)
	}
	return &fsmSnapshot{view: f.state.View(), members: m}, nil
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(s.members)))
	_, err := sink.Write(append(hdr[:], s.members...))
	if err == nil {
		_, err = s.view.WriteTo(sink, tables.AllData)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("replicated: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var hdr [4]byte
	if _, err := io.ReadFull(rc, hdr[:]); err != nil {
		return fmt.Errorf("replicated: read snapshot: %w", err)
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > 64<<20 {
		return fmt.Errorf("replicated: snapshot member list too large (%d bytes)", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return fmt.Errorf("replicated: read snapshot: %w", err)
	}
	m := map[string]member{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("replicated: read snapshot members: %w", err)
	}
	if err := f.state.Restore(rc); err != nil {
		return fmt.Errorf("replicated: restore tables: %w", err)
	}
	f.mu.Lock()
	f.members = m
	f.mu.Unlock()
	return nil
}
