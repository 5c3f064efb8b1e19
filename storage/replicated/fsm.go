package replicated

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/tables"
)

// A raft log entry's payload is one tag byte and a body:
//
//	'T' + tables.Command encoding (Declare / Apply batches, storage/tables)
//	'M' + JSON map[raft ID]member (the leader's member list)
//	'E' + raft ID of the leader: a new RAM epoch (every node empties its RAM
//	      tables and they are valid again)
//	'S' + raft ID NUL incarnation of a node (process) whose RAM tables are
//	      not valid: a sync marker
//	      (valid nodes capture their tables when they apply it; the asking node
//	      fetches that image and installs it before applying the next entry)
//	'Q' + 16-byte request ID + a 'T' entry: a batch from Store.Apply. The FSM
//	      remembers each ID's outcome for a while (requestWindow) and answers
//	      a duplicate (a client's retry after its forwarded RPC died although
//	      the leader had the entry) with that outcome instead of applying it
//	      again; the memory is part of the snapshot, so every node decides
//	      alike.
const (
	entryTables   = byte('T')
	entryMembers  = byte('M')
	entryRAMEpoch = byte('E')
	entryRAMSync  = byte('S')
	entryRequest  = byte('Q')
)

const (
	requestIDLen = 16
	// Request IDs are remembered for requestWindow of leader time (the
	// entries' AppendedAt) and at most maxRequests of them.
	requestWindow = 60 * time.Second
	maxRequests   = 50000
)

// request is the remembered outcome of one request ID.
type request struct {
	ID    []byte `json:"id"`
	Index uint64 `json:"index"`
	At    int64  `json:"at"` // AppendedAt, unix ns
	Kind  string `json:"kind,omitempty"`
	Err   string `json:"err,omitempty"`
}

// outcome rebuilds the error a request had.
func (r *request) outcome() error {
	if r.Err == "" {
		return nil
	}
	switch r.Kind {
	case "conflict":
		return fmt.Errorf("%w: %s", storage.ErrConflict, r.Err)
	case "notable":
		return fmt.Errorf("%w: %s", storage.ErrNoTable, r.Err)
	case "mismatch":
		return fmt.Errorf("%w: %s", tables.ErrCopyMismatch, r.Err)
	case "ramcond":
		return fmt.Errorf("%w: %s", tables.ErrRAMCondition, r.Err)
	case "unavailable":
		return fmt.Errorf("%w: %s", errRAMUnsynced, r.Err)
	}
	return errors.New(r.Err)
}

// withRequestID wraps a 'T' entry with a fresh request ID.
func withRequestID(entry []byte) []byte {
	b := make([]byte, 1+requestIDLen, 1+requestIDLen+len(entry))
	b[0] = entryRequest
	_, _ = rand.Read(b[1 : 1+requestIDLen])
	return append(b, entry...)
}

// errRAMUnsynced is the outcome of a conditional batch on RAM tables applied by
// a node whose RAM tables are not valid: it cannot tell whether the condition
// held (the valid nodes decided it). Callers see storage.ErrUnavailable.
var errRAMUnsynced = errors.New("replicated: this node's RAM tables are not synced; the outcome of the batch is unknown here")

// member is the leader's view of one raft server, replicated through the log
// so that every node can show it (`xmppctl tables`, degraded-ram mode).
type member struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Storage string `json:"storage"` // "durable" or "ram-only"
	Witness bool   `json:"witness,omitempty"`
	RAM     string `json:"ram,omitempty"` // "synced" or "unsynced": are its RAM tables valid
	Inc     uint64 `json:"inc,omitempty"` // incarnation of the process that reported it
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

	// RAM tables. ramValid is in memory only: it says this process's RAM
	// tables equal the cluster's at the applied index. It starts true for an
	// empty state, becomes false when a redacted entry or a device snapshot
	// (neither carries RAM rows) is applied, and true again on a new RAM epoch
	// or after installing a valid peer's image at a sync marker.
	ramValid  bool
	ramEpoch  uint64          // RAM epochs applied (durable: in the snapshot)
	converted map[string]bool // tables changed RAM -> disc while RAM was not valid
	captures  []capture       // images taken at sync markers (valid nodes)
	syncedAt  uint64          // index of the last sync marker this node installed
	self      string          // this process's sync marker body: raft ID NUL incarnation
	// fetch gets the image captured at a sync marker from a valid peer (set by
	// the Store; bounded in time). snapshotNeeded asks for a local snapshot
	// (a table's copy type changed). Both may be nil in unit tests.
	fetch          func(index uint64, extra []string) (*tables.State, error)
	snapshotNeeded func()
	log            *slog.Logger

	requests map[string]*request // request ID -> outcome
	reqOrder []*request          // in log order, for pruning
}

// capture is a valid node's tables at a sync marker.
type capture struct {
	index uint64
	at    time.Time
	view  *tables.View
}

const (
	keepCaptures = 8
	captureTTL   = 30 * time.Second
)

type entryResult struct {
	sum uint64
	err error
}

const keepResults = 4096

func newFSM() *fsm {
	f := &fsm{state: tables.New(), members: map[string]member{}, results: map[uint64]entryResult{},
		ramValid: true, converted: map[string]bool{}, log: slog.New(slog.DiscardHandler), requests: map[string]*request{}}
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
		return applyResult{err: f.applyTables(l.Index, cmd)}
	case entryRequest:
		if len(l.Data) < 2+requestIDLen || l.Data[1+requestIDLen] != entryTables {
			return applyResult{err: fmt.Errorf("replicated: entry %d: bad request entry", l.Index)}
		}
		id := string(l.Data[1 : 1+requestIDLen])
		f.mu.Lock()
		prev, dup := f.requests[id]
		f.mu.Unlock()
		if dup {
			return applyResult{err: prev.outcome()}
		}
		inner := *l
		inner.Data = l.Data[1+requestIDLen:]
		res := f.apply(&inner)
		r := &request{ID: []byte(id), Index: l.Index, At: l.AppendedAt.UnixNano(), Kind: errKind(res.err)}
		if res.err != nil {
			r.Err = res.err.Error()
		}
		f.mu.Lock()
		f.requests[id] = r
		f.reqOrder = append(f.reqOrder, r)
		f.pruneRequests(r.At)
		f.mu.Unlock()
		return res
	case entryRAMEpoch:
		f.state.ClearRAM()
		f.mu.Lock()
		was := f.ramValid
		f.ramValid, f.converted = true, map[string]bool{}
		f.ramEpoch++
		epoch := f.ramEpoch
		f.mu.Unlock()
		f.log.Info("new RAM epoch: RAM tables emptied and valid", "epoch", epoch, "index", l.Index,
			"by", string(l.Data[1:]), "was_valid", was)
		return applyResult{}
	case entryRAMSync:
		f.applySync(l.Index, string(l.Data[1:]))
		return applyResult{}
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

// pruneRequests forgets request IDs older than requestWindow before now (leader
// time of the entry being applied) or beyond maxRequests. It depends only on
// the log, so every node keeps the same ones. Caller holds mu.
func (f *fsm) pruneRequests(now int64) {
	n := 0
	for n < len(f.reqOrder) && (len(f.reqOrder)-n > maxRequests || f.reqOrder[n].At < now-int64(requestWindow)) {
		delete(f.requests, string(f.reqOrder[n].ID))
		n++
	}
	f.reqOrder = f.reqOrder[n:] // append reallocates (copying only live ones) as it grows
}

// applyTables applies a tables command, keeping RAM validity.
func (f *fsm) applyTables(index uint64, cmd tables.Command) error {
	valid := f.valid()
	switch cmd.Kind {
	case tables.CmdApply:
		err := f.state.ApplyWith(cmd, !valid)
		if err != nil {
			return err
		}
		if valid && cmd.HasRedacted() {
			// Replaying an entry read back from a device: its RAM ops are gone.
			f.invalidate(fmt.Sprintf("entry %d had its RAM ops removed on disk", index))
		}
		if !valid && cmd.HasRAM() {
			for i, op := range cmd.Ops {
				if cmd.Marks[i] == tables.MarkRAM && op.Cond != storage.CondNone {
					return errRAMUnsynced
				}
			}
		}
		return nil
	case tables.CmdDeclare:
		old, had := f.state.Spec(cmd.Spec.Name)
		if err := f.state.ApplyWith(cmd, !valid); err != nil {
			return err
		}
		if had && old.Copy != cmd.Spec.Copy {
			if !valid && cmd.Spec.Copy == storage.Disc {
				f.mu.Lock()
				f.converted[cmd.Spec.Name] = true
				f.mu.Unlock()
			}
			// RAM -> disc: the rows reach the device with the next
			// snapshot, taken now; disc -> RAM: they leave it.
			if f.snapshotNeeded != nil {
				f.snapshotNeeded()
			}
		}
		return nil
	}
	return f.state.ApplyWith(cmd, !valid)
}

// applySync applies a sync marker asked for by node id.
func (f *fsm) applySync(index uint64, id string) {
	if f.valid() {
		f.mu.Lock()
		f.captures = append(f.captures, capture{index: index, at: time.Now(), view: f.state.View()})
		if len(f.captures) > keepCaptures {
			f.captures = append([]capture(nil), f.captures[len(f.captures)-keepCaptures:]...)
		}
		f.mu.Unlock()
		return
	}
	if id != f.self || f.fetch == nil {
		return
	}
	f.mu.Lock()
	extra := make([]string, 0, len(f.converted))
	for name := range f.converted {
		extra = append(extra, name)
	}
	f.mu.Unlock()
	img, err := f.fetch(index, extra)
	if err != nil {
		f.log.Warn("RAM tables resync failed; will retry with a new marker", "index", index, "err", err)
		return
	}
	want := wantTables(extra)
	f.state.InstallRows(img, want)
	f.mu.Lock()
	f.ramValid, f.converted, f.syncedAt = true, map[string]bool{}, index
	f.mu.Unlock()
	f.log.Info("RAM tables resynced from a peer", "index", index)
	if len(extra) > 0 && f.snapshotNeeded != nil {
		f.snapshotNeeded() // the converted tables' rows must reach the device
	}
}

// wantTables accepts RAM tables and the named ones.
func wantTables(extra []string) tables.DataFilter {
	return func(spec storage.TableSpec) bool {
		return spec.Copy == storage.RAM || slices.Contains(extra, spec.Name)
	}
}

// image returns the tables captured at sync marker index, if this node was
// valid when it applied it.
func (f *fsm) image(index uint64) (*tables.View, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.captures {
		if c.index == index {
			return c.view, true
		}
	}
	return nil, false
}

func (f *fsm) invalidate(why string) {
	f.mu.Lock()
	was := f.ramValid
	f.ramValid = false
	f.mu.Unlock()
	if was {
		f.log.Warn("RAM tables not valid on this node: they will be resynced from a peer or emptied by a new RAM epoch", "why", why)
	}
}

// valid reports whether this node's RAM tables are valid.
func (f *fsm) valid() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ramValid
}

func (f *fsm) syncedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncedAt
}

func (f *fsm) advance(index uint64, r entryResult, keep bool) {
	f.mu.Lock()
	// Captures keep old versions of every table alive: keep them only for
	// as long as an asking node can take to fetch one.
	for len(f.captures) > 0 && time.Since(f.captures[0].at) > captureTTL {
		f.captures = f.captures[1:]
	}
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

// Snapshot format: "XFS2", u32 length + JSON snapMeta, then a tables snapshot.
// The snapshot raft keeps in RAM (and sends to joining or lagging nodes) has
// every table's rows, RAM tables too; the copy written to a device has no RAM
// rows and says so (RAMValid false), see redactSnapshot. Version 1 (no magic:
// u32 length + member list JSON) is still read, as not RAM-valid.
const snapMagic = "XFS2"

type snapMeta struct {
	Members  map[string]member `json:"members"`
	RAMValid bool              `json:"ram_valid"`
	RAMEpoch uint64            `json:"ram_epoch"`
	Requests []*request        `json:"requests,omitempty"`
}

type fsmSnapshot struct {
	view *tables.View
	meta []byte
}

// Snapshot implements raft.FSM; taking the view is O(1).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	m, err := json.Marshal(snapMeta{Members: f.members, RAMValid: f.ramValid, RAMEpoch: f.ramEpoch, Requests: f.reqOrder})
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("replicated: snapshot members: %w", err)
	}
	return &fsmSnapshot{view: f.state.View(), meta: m}, nil
}

func writeSnapHeader(w io.Writer, meta []byte) error {
	hdr := make([]byte, 8, 8+len(meta))
	copy(hdr, snapMagic)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(meta)))
	_, err := w.Write(append(hdr, meta...))
	return err
}

// readSnapHeader reads the header of either snapshot version.
func readSnapHeader(r io.Reader) (snapMeta, error) {
	var meta snapMeta
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return meta, fmt.Errorf("replicated: read snapshot: %w", err)
	}
	v2 := string(hdr[:]) == snapMagic
	if v2 {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return meta, fmt.Errorf("replicated: read snapshot: %w", err)
		}
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > 64<<20 {
		return meta, fmt.Errorf("replicated: snapshot member list too large (%d bytes)", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return meta, fmt.Errorf("replicated: read snapshot: %w", err)
	}
	var err error
	if v2 {
		err = json.Unmarshal(b, &meta)
	} else {
		err = json.Unmarshal(b, &meta.Members)
	}
	if err != nil {
		return meta, fmt.Errorf("replicated: read snapshot members: %w", err)
	}
	if meta.Members == nil {
		meta.Members = map[string]member{}
	}
	return meta, nil
}

// redactSnapshot returns the device copy of a snapshot: the same header with
// RAMValid false and the tables without RAM rows (specs kept).
func redactSnapshot(full []byte) ([]byte, error) {
	r := bytes.NewReader(full)
	meta, err := readSnapHeader(r)
	if err != nil {
		return nil, err
	}
	meta.RAMValid = false
	m, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("replicated: redact snapshot: %w", err)
	}
	var out bytes.Buffer
	out.Grow(len(full))
	if err := writeSnapHeader(&out, m); err != nil {
		return nil, err
	}
	if _, err := tables.CopySnapshot(r, &out, tables.DiscData); err != nil {
		return nil, fmt.Errorf("replicated: redact snapshot: %w", err)
	}
	return out.Bytes(), nil
}

// testPersistDelay (nanoseconds; tests only) slows every snapshot's Persist
// down, as a CPU-starved node's snapshot is.
var testPersistDelay atomic.Int64

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if d := testPersistDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	err := writeSnapHeader(sink, s.meta)
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
	meta, err := readSnapHeader(rc)
	if err != nil {
		return err
	}
	if err := f.state.Restore(rc); err != nil {
		return fmt.Errorf("replicated: restore tables: %w", err)
	}
	f.mu.Lock()
	f.members = meta.Members
	f.ramEpoch = meta.RAMEpoch
	f.reqOrder = meta.Requests
	f.requests = make(map[string]*request, len(meta.Requests))
	for _, r := range meta.Requests {
		f.requests[string(r.ID)] = r
	}
	f.converted = map[string]bool{}
	f.mu.Unlock()
	if meta.RAMValid {
		f.mu.Lock()
		f.ramValid = true
		f.mu.Unlock()
	} else {
		f.invalidate("restored a snapshot without RAM rows (from a device)")
	}
	return nil
}
