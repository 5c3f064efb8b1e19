// Package tables owns the in-memory state of xedge's durable tables: a set of
// named, ordered key/value tables, the deterministic commands that change them
// (Declare and Apply batches), the binary encoding of those commands, and the
// binary encoding of a point-in-time snapshot of the whole state.
//
// It is the state machine behind every storage.Store implementation: the
// single-node store (storage/local) logs encoded commands and applies them here;
// the raft-replicated store wraps a State as its raft FSM:
//
//	FSM.Apply(l *raft.Log)      -> cmd, err := tables.DecodeCommand(l.Data); return s.Apply(cmd)
//	FSM.Snapshot()              -> v := s.View(); persist with v.WriteTo(sink, tables.AllData)
//	FSM.Restore(rc)             -> s.Restore(rc)
//
// Apply is deterministic: the same commands in the same order give the same
// state and the same results on every node. Reads (Get, Scan, Count) never block
// behind writes for longer than a pointer copy: each table is an immutable radix
// tree (github.com/hashicorp/go-immutable-radix), so a reader or a snapshot works
// on a consistent version while writers build the next one.
//
// tables imports only the storage contract; it must not import any storage
// implementation, raft, xmppd, iscsi or init.
package tables

import (
	"bufio"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"sync"
	"unsafe"

	iradix "github.com/hashicorp/go-immutable-radix"

	"xedge/storage"
)

// ErrCopyMismatch is wrapped when a batch's op was marked for a copy type the
// table no longer has at apply time (a Declare changed it in between): the
// whole batch is refused on every node alike, and the caller may mark it again
// and retry.
var ErrCopyMismatch = errors.New("tables: table copy type changed while the batch was in flight")

// ErrRAMCondition is wrapped when a batch that writes disc tables carries a
// condition on a RAM table: RAM ops are removed before an entry reaches a
// device, so replaying it could decide differently. Such a batch is refused.
var ErrRAMCondition = errors.New("tables: a batch writing disc tables may not carry conditions on RAM tables")

// ErrTooLarge is wrapped when a key, value or batch exceeds the encoding's
// limits (keys 64 KiB, values 64 MiB, 1Mi ops per batch).
var ErrTooLarge = errors.New("tables: too large")

// Castagnoli is the CRC32C table every xedge storage format uses.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// table is one durable table: its spec, its data and its size.
type table struct {
	spec  storage.TableSpec
	tree  *iradix.Tree // key []byte -> value []byte
	bytes int64        // sum of len(key)+len(value)
}

// State is the set of durable tables. It is safe for concurrent use.
type State struct {
	mu     sync.RWMutex
	tables map[string]*table
}

// New returns an empty State.
func New() *State {
	return &State{tables: make(map[string]*table)}
}

// Specs returns every table's spec, sorted by name.
func (s *State) Specs() []storage.TableSpec {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]storage.TableSpec, 0, len(s.tables))
	for _, t := range s.tables {
		out = append(out, t.spec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Spec returns a table's spec.
func (s *State) Spec(name string) (storage.TableSpec, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tables[name]
	if !ok {
		return storage.TableSpec{}, false
	}
	return t.spec, true
}

// NeedsDeclare reports whether declaring spec would change the state (the table
// is new or its copy type differs). Callers use it to avoid logging no-op
// Declare commands.
func (s *State) NeedsDeclare(spec storage.TableSpec) bool {
	old, ok := s.Spec(spec.Name)
	return !ok || old.Copy != spec.Copy
}

// Info describes every table for storage.Store.Tables.
func (s *State) Info() []storage.TableInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]storage.TableInfo, 0, len(s.tables))
	for _, t := range s.tables {
		out = append(out, storage.TableInfo{
			Name:  t.spec.Name,
			Kind:  "durable",
			Copy:  t.spec.Copy.String(),
			Keys:  t.tree.Len(),
			Bytes: t.bytes,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Apply executes one command. For an Apply command every Cond is checked against
// the state before the batch and every table must exist; then all ops are applied
// in order, or none is. The error wraps storage.ErrConflict (with the failing
// table and key) or storage.ErrNoTable.
func (s *State) Apply(cmd Command) error { return s.ApplyWith(cmd, false) }

// ApplyWith is Apply for the replicated store. A marked batch (Command.Marks)
// is refused whole if a mark disagrees with its table's copy type
// (ErrCopyMismatch) or if it writes disc tables and carries a condition on a
// RAM table (ErrRAMCondition); redacted ops write nothing. With skipRAM (this
// node's RAM tables are not valid) ops on RAM tables and their conditions are
// skipped; the disc ops are decided and applied as on every other node.
func (s *State) ApplyWith(cmd Command, skipRAM bool) error {
	switch cmd.Kind {
	case CmdDeclare:
		return s.declare(cmd.Spec)
	case CmdApply:
		return s.applyOps(cmd.Ops, cmd.Marks, skipRAM)
	case CmdClear:
		return s.clear(cmd.Spec.Name)
	}
	return fmt.Errorf("tables: unknown command kind %d", cmd.Kind)
}

func validName(name string) error {
	if name == "" {
		return errors.New("tables: empty table name")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("tables: table name longer than %d bytes", maxNameLen)
	}
	return nil
}

func (s *State) declare(spec storage.TableSpec) error {
	if err := validName(spec.Name); err != nil {
		return err
	}
	if spec.Copy != storage.Disc && spec.Copy != storage.RAM {
		return fmt.Errorf("tables: table %q: unknown copy type %d", spec.Name, spec.Copy)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tables[spec.Name]; ok {
		t.spec = spec
		return nil
	}
	s.tables[spec.Name] = &table{spec: spec, tree: iradix.New()}
	return nil
}

func (s *State) clear(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tables[name]
	if !ok {
		return fmt.Errorf("%w: %q", storage.ErrNoTable, name)
	}
	t.tree = iradix.New()
	t.bytes = 0
	return nil
}

// ClearRAM empties every RAM table. A store calls it after recovering from disk,
// since RAM tables do not survive a restart.
func (s *State) ClearRAM() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tables {
		if t.spec.Copy == storage.RAM {
			t.tree = iradix.New()
			t.bytes = 0
		}
	}
}

// Check validates a batch against the current state without applying it: every
// table exists and every Cond holds.
func (s *State) Check(ops []storage.Op) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.checkLocked(ops, nil, false)
}

// CheckMarks validates the marks of a batch without state: a batch writing
// disc tables may carry no condition on a RAM-marked op.
func CheckMarks(ops []storage.Op, marks []Mark) error {
	if marks == nil {
		return nil
	}
	if len(marks) != len(ops) {
		return fmt.Errorf("tables: %d marks for %d ops", len(marks), len(ops))
	}
	disc, ramCond := false, -1
	for i, m := range marks {
		switch m {
		case MarkDisc:
			disc = true
		case MarkRAM, MarkRedacted:
			if ops[i].Cond != storage.CondNone && ramCond < 0 {
				ramCond = i
			}
		default:
			return fmt.Errorf("tables: op %d: unknown mark %d", i, m)
		}
	}
	if disc && ramCond >= 0 {
		return fmt.Errorf("%w (op %d on %q)", ErrRAMCondition, ramCond, ops[ramCond].Table)
	}
	return nil
}

// skipOp reports whether op i is not applied: a redacted op, or an op on a
// RAM table while skipRAM. Caller holds mu; the table exists.
func (s *State) skipOp(op *storage.Op, marks []Mark, i int, skipRAM bool) bool {
	if marks != nil && marks[i] == MarkRedacted {
		return true
	}
	return skipRAM && s.tables[op.Table].spec.Copy == storage.RAM
}

func (s *State) checkLocked(ops []storage.Op, marks []Mark, skipRAM bool) error {
	if len(ops) > maxOps {
		return fmt.Errorf("%w: %d ops in one batch (limit %d)", ErrTooLarge, len(ops), maxOps)
	}
	if err := CheckMarks(ops, marks); err != nil {
		return err
	}
	for i := range ops {
		op := &ops[i]
		t, ok := s.tables[op.Table]
		if !ok {
			return fmt.Errorf("%w: %q", storage.ErrNoTable, op.Table)
		}
		if marks != nil {
			want := MarkFor(t.spec.Copy)
			if m := marks[i]; m != want && !(m == MarkRedacted && want == MarkRAM) {
				return fmt.Errorf("%w: %q is %s", ErrCopyMismatch, op.Table, t.spec.Copy)
			}
		}
	}
	for i := range ops {
		op := &ops[i]
		t, ok := s.tables[op.Table]
		if !ok {
			return fmt.Errorf("%w: %q", storage.ErrNoTable, op.Table)
		}
		switch op.Kind {
		case storage.OpPut, storage.OpDelete, storage.OpDeletePrefix:
		default:
			return fmt.Errorf("tables: op %d: unknown kind %d", i, op.Kind)
		}
		// What the log could not decode again must never be accepted.
		if len(op.Key) > maxKeyLen {
			return fmt.Errorf("%w: op %d: key of %d bytes (limit %d)", ErrTooLarge, i, len(op.Key), maxKeyLen)
		}
		if len(op.Value) > maxValueLen {
			return fmt.Errorf("%w: op %d: value of %d bytes (limit %d)", ErrTooLarge, i, len(op.Value), maxValueLen)
		}
		if s.skipOp(op, marks, i, skipRAM) {
			continue
		}
		switch op.Cond {
		case storage.CondNone:
		case storage.CondAbsent:
			if _, ok := t.tree.Get([]byte(op.Key)); ok {
				return fmt.Errorf("%w: %s/%q exists", storage.ErrConflict, op.Table, op.Key)
			}
		case storage.CondPresent:
			if _, ok := t.tree.Get([]byte(op.Key)); !ok {
				return fmt.Errorf("%w: %s/%q is absent", storage.ErrConflict, op.Table, op.Key)
			}
		default:
			return fmt.Errorf("tables: op %d: unknown cond %d", i, op.Cond)
		}
	}
	return nil
}

func (s *State) applyOps(ops []storage.Op, marks []Mark, skipRAM bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ops, marks, skipRAM); err != nil {
		return err
	}
	txns := make(map[string]*iradix.Txn, 1)
	for i := range ops {
		op := &ops[i]
		if s.skipOp(op, marks, i, skipRAM) {
			continue
		}
		t := s.tables[op.Table]
		txn := txns[op.Table]
		if txn == nil {
			txn = t.tree.Txn()
			txns[op.Table] = txn
		}
		k := []byte(op.Key)
		switch op.Kind {
		case storage.OpPut:
			v := append([]byte(nil), op.Value...)
			if v == nil {
				v = []byte{}
			}
			old, updated := txn.Insert(k, v)
			if updated {
				t.bytes -= int64(len(k) + len(old.([]byte)))
			}
			t.bytes += int64(len(k) + len(v))
		case storage.OpDelete:
			if old, ok := txn.Delete(k); ok {
				t.bytes -= int64(len(k) + len(old.([]byte)))
			}
		case storage.OpDeletePrefix:
			txn.Root().WalkPrefix(k, func(key []byte, v interface{}) bool {
				t.bytes -= int64(len(key) + len(v.([]byte)))
				return false
			})
			txn.DeletePrefix(k)
		}
	}
	for name, txn := range txns {
		s.tables[name].tree = txn.CommitOnly()
	}
	return nil
}

// Filter returns the ops of a batch that write disc tables, with their Conds
// cleared: the effective writes a single-node store must persist once the batch
// has been checked (replaying them must not depend on RAM tables).
func (s *State) Filter(ops []storage.Op) (disc []storage.Op) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, op := range ops {
		if t, ok := s.tables[op.Table]; ok && t.spec.Copy == storage.Disc {
			op.Cond = storage.CondNone
			disc = append(disc, op)
		}
	}
	return disc
}

// Table returns a read handle on a table. The handle looks the table up on
// every call, so it stays valid across Restore.
func (s *State) Table(name string) (storage.Table, error) {
	if _, ok := s.Spec(name); !ok {
		return nil, fmt.Errorf("%w: %q", storage.ErrNoTable, name)
	}
	return handle{s: s, name: name}, nil
}

func (s *State) tree(name string) (*iradix.Tree, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tables[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", storage.ErrNoTable, name)
	}
	return t.tree, nil
}

type handle struct {
	s    *State
	name string
}

// Stamp implements storage.Stamped: the table's current immutable tree, which
// every commit that writes to the table replaces (and which the caller's
// reference keeps from being freed, so its address is not reused while the
// stamp is held).
func (h handle) Stamp() any {
	tr, err := h.s.tree(h.name)
	if err != nil {
		return new(byte) // equal to nothing
	}
	return tr
}

// Get returns a copy of the value.
func (h handle) Get(key string) ([]byte, bool, error) {
	v, ok, err := h.GetShared(key)
	if !ok || err != nil {
		return nil, false, err
	}
	return append([]byte{}, v...), true, nil
}

// GetShared implements storage.SharedReader: the stored value itself. Values
// are never changed once stored (applyOps and ReadFrom store fresh copies; a
// later write stores a new value), so it stays as it is while kept.
func (h handle) GetShared(key string) ([]byte, bool, error) {
	tr, err := h.s.tree(h.name)
	if err != nil {
		return nil, false, err
	}
	v, ok := tr.Get([]byte(key))
	if !ok {
		return nil, false, nil
	}
	return v.([]byte), true, nil
}

// Scan walks a consistent version of the table without holding any lock, so fn
// may call back into the store (even Apply). The value passed to fn must not be
// modified; copy it to keep it. The key is the stored key's own bytes, without
// a copy: keys, like values, are never changed once stored, and a scan of an
// archive's index visits hundreds of them per query.
func (h handle) Scan(prefix string, fn func(key string, value []byte) bool) error {
	tr, err := h.s.tree(h.name)
	if err != nil {
		return err
	}
	tr.Root().WalkPrefix([]byte(prefix), func(k []byte, v interface{}) bool {
		return !fn(unsafe.String(unsafe.SliceData(k), len(k)), v.([]byte))
	})
	return nil
}

func (h handle) Count(prefix string) (int, error) {
	tr, err := h.s.tree(h.name)
	if err != nil {
		return 0, err
	}
	if prefix == "" {
		return tr.Len(), nil
	}
	n := 0
	tr.Root().WalkPrefix([]byte(prefix), func([]byte, interface{}) bool { n++; return false })
	return n, nil
}

// View is an immutable point-in-time copy of a State, cheap to take (no data is
// copied). Write it out with WriteTo.
type View struct {
	tables []viewTable
}

type viewTable struct {
	spec  storage.TableSpec
	tree  *iradix.Tree
	bytes int64
}

// View returns a point-in-time view of the state.
func (s *State) View() *View {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := &View{tables: make([]viewTable, 0, len(s.tables))}
	for _, t := range s.tables {
		v.tables = append(v.tables, viewTable{spec: t.spec, tree: t.tree, bytes: t.bytes})
	}
	sort.Slice(v.tables, func(i, j int) bool { return v.tables[i].spec.Name < v.tables[j].spec.Name })
	return v
}

// DataFilter says whether a table's rows go into a snapshot; the specs of all
// tables always do.
type DataFilter func(storage.TableSpec) bool

var (
	// AllData keeps every table's rows (a raft snapshot, which must carry RAM
	// tables to new members).
	AllData DataFilter = func(storage.TableSpec) bool { return true }
	// DiscData keeps only disc tables' rows (a single-node snapshot on disk).
	DiscData DataFilter = func(s storage.TableSpec) bool { return s.Copy == storage.Disc }
)

// snapshot format (all integers little-endian or uvarint):
//
//	magic "XTBS" version(1 byte = 1)
//	uvarint ntables
//	per table: uvarint len(name) name, copy(1 byte), uvarint nkeys,
//	           nkeys * (uvarint len(key) key uvarint len(value) value)
//	crc32c (4 bytes LE) of everything before it
const snapMagic = "XTBS\x01"

// WriteTo writes the view in the snapshot format, with rows only of tables
// keep accepts, and returns the number of bytes written.
func (v *View) WriteTo(w io.Writer, keep DataFilter) (int64, error) {
	cw := &crcWriter{w: bufio.NewWriterSize(w, 64<<10), h: crc32.New(Castagnoli)}
	cw.write([]byte(snapMagic))
	cw.uvarint(uint64(len(v.tables)))
	for _, t := range v.tables {
		cw.bytes([]byte(t.spec.Name))
		cw.write([]byte{byte(t.spec.Copy)})
		if !keep(t.spec) {
			cw.uvarint(0)
			continue
		}
		cw.uvarint(uint64(t.tree.Len()))
		t.tree.Root().Walk(func(k []byte, val interface{}) bool {
			cw.bytes(k)
			cw.bytes(val.([]byte))
			return cw.err != nil
		})
	}
	sum := cw.h.Sum32()
	cw.write([]byte{byte(sum), byte(sum >> 8), byte(sum >> 16), byte(sum >> 24)})
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	if cw.err != nil {
		return cw.n, fmt.Errorf("tables: write snapshot: %w", cw.err)
	}
	return cw.n, nil
}

// InstallRows replaces the rows of every table of s that want accepts with
// that table's rows in img (none if img lacks it), keeping specs. A replicated
// node uses it to take its RAM tables from a peer's image at the same log index.
func (s *State) InstallRows(img *State, want DataFilter) {
	img.mu.RLock()
	defer img.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, t := range s.tables {
		if !want(t.spec) {
			continue
		}
		if it, ok := img.tables[name]; ok {
			t.tree, t.bytes = it.tree, it.bytes
		} else {
			t.tree, t.bytes = iradix.New(), 0
		}
	}
}

// HasRows reports whether any table that keep accepts holds rows.
func (v *View) HasRows(keep DataFilter) bool {
	for _, t := range v.tables {
		if keep(t.spec) && t.tree.Len() > 0 {
			return true
		}
	}
	return false
}

// CopySnapshot copies a snapshot from r to w, keeping the rows only of tables
// keep accepts (every spec is kept), and verifies r's checksum. It streams:
// no table is built in memory.
func CopySnapshot(r io.Reader, w io.Writer, keep DataFilter) (int64, error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 64<<10), h: crc32.New(Castagnoli)}
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := &crcWriter{w: bw, h: crc32.New(Castagnoli)}
	fail := func(err error) (int64, error) { return cw.n, fmt.Errorf("tables: copy snapshot: %w", err) }
	magic := make([]byte, len(snapMagic))
	if err := cr.full(magic); err != nil {
		return fail(err)
	}
	if string(magic) != snapMagic {
		return fail(fmt.Errorf("not a table snapshot (magic %q)", magic))
	}
	cw.write(magic)
	ntab, err := cr.uvarint()
	if err != nil {
		return fail(err)
	}
	if ntab > maxTables {
		return fail(fmt.Errorf("snapshot claims %d tables", ntab))
	}
	cw.uvarint(ntab)
	for i := uint64(0); i < ntab; i++ {
		name, err := cr.bytes(maxNameLen)
		if err != nil {
			return fail(err)
		}
		var cp [1]byte
		if err := cr.full(cp[:]); err != nil {
			return fail(err)
		}
		spec := storage.TableSpec{Name: string(name), Copy: storage.CopyType(cp[0])}
		nkeys, err := cr.uvarint()
		if err != nil {
			return fail(err)
		}
		kept := keep(spec)
		cw.bytes(name)
		cw.write(cp[:])
		if kept {
			cw.uvarint(nkeys)
		} else {
			cw.uvarint(0)
		}
		for k := uint64(0); k < 2*nkeys; k++ {
			max := uint64(maxKeyLen)
			if k%2 == 1 {
				max = maxValueLen
			}
			b, err := cr.bytes(max)
			if err != nil {
				return fail(err)
			}
			if kept {
				cw.bytes(b)
			}
		}
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return fail(fmt.Errorf("checksum: %w", err))
	}
	if got := uint32(sum[0]) | uint32(sum[1])<<8 | uint32(sum[2])<<16 | uint32(sum[3])<<24; got != want {
		return fail(fmt.Errorf("checksum mismatch (stored %08x, computed %08x)", got, want))
	}
	out := cw.h.Sum32()
	cw.write([]byte{byte(out), byte(out >> 8), byte(out >> 16), byte(out >> 24)})
	if cw.err == nil {
		cw.err = bw.Flush()
	}
	if cw.err != nil {
		return fail(cw.err)
	}
	return cw.n, nil
}

// Restore replaces the whole state with a snapshot read from r. On any error
// (short read, bad CRC, bad encoding) the state is left unchanged.
func (s *State) Restore(r io.Reader) error {
	next, err := ReadSnapshot(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.tables = next.tables
	s.mu.Unlock()
	return nil
}

// ReadSnapshot decodes a snapshot into a new State.
func ReadSnapshot(r io.Reader) (*State, error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 64<<10), h: crc32.New(Castagnoli)}
	magic := make([]byte, len(snapMagic))
	if err := cr.full(magic); err != nil {
		return nil, fmt.Errorf("tables: read snapshot header: %w", err)
	}
	if string(magic) != snapMagic {
		return nil, fmt.Errorf("tables: not a table snapshot (magic %q)", magic)
	}
	st := New()
	ntab, err := cr.uvarint()
	if err != nil {
		return nil, fmt.Errorf("tables: read snapshot: %w", err)
	}
	if ntab > maxTables {
		return nil, fmt.Errorf("tables: snapshot claims %d tables", ntab)
	}
	for i := uint64(0); i < ntab; i++ {
		name, err := cr.bytes(maxNameLen)
		if err != nil {
			return nil, fmt.Errorf("tables: read snapshot table %d: %w", i, err)
		}
		var cp [1]byte
		if err := cr.full(cp[:]); err != nil {
			return nil, fmt.Errorf("tables: read snapshot table %q: %w", name, err)
		}
		spec := storage.TableSpec{Name: string(name), Copy: storage.CopyType(cp[0])}
		if err := st.declare(spec); err != nil {
			return nil, fmt.Errorf("tables: read snapshot: %w", err)
		}
		t := st.tables[spec.Name]
		nkeys, err := cr.uvarint()
		if err != nil {
			return nil, fmt.Errorf("tables: read snapshot table %q: %w", name, err)
		}
		txn := t.tree.Txn()
		for k := uint64(0); k < nkeys; k++ {
			key, err := cr.bytes(maxKeyLen)
			if err != nil {
				return nil, fmt.Errorf("tables: read snapshot table %q key %d: %w", name, k, err)
			}
			val, err := cr.bytes(maxValueLen)
			if err != nil {
				return nil, fmt.Errorf("tables: read snapshot table %q value %d: %w", name, k, err)
			}
			txn.Insert(key, val)
			t.bytes += int64(len(key) + len(val))
		}
		t.tree = txn.CommitOnly()
	}
	want := cr.h.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return nil, fmt.Errorf("tables: read snapshot checksum: %w", err)
	}
	got := uint32(sum[0]) | uint32(sum[1])<<8 | uint32(sum[2])<<16 | uint32(sum[3])<<24
	if got != want {
		return nil, fmt.Errorf("tables: snapshot checksum mismatch (stored %08x, computed %08x)", got, want)
	}
	return st, nil
}

type crcWriter struct {
	w   io.Writer
	h   hash.Hash32
	n   int64
	err error
	buf [10]byte
}

func (c *crcWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	c.h.Write(p)
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
}

func (c *crcWriter) uvarint(x uint64) {
	n := putUvarint(c.buf[:], x)
	c.write(c.buf[:n])
}

func (c *crcWriter) bytes(p []byte) {
	c.uvarint(uint64(len(p)))
	c.write(p)
}

type crcReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (c *crcReader) full(p []byte) error {
	if _, err := io.ReadFull(c.r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	c.h.Write(p)
	return nil
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	c.h.Write([]byte{b})
	return b, nil
}

func (c *crcReader) uvarint() (uint64, error) {
	return readUvarint(c)
}

func (c *crcReader) bytes(max uint64) ([]byte, error) {
	n, err := c.uvarint()
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, fmt.Errorf("length %d over limit %d", n, max)
	}
	p := make([]byte, n)
	if err := c.full(p); err != nil {
		return nil, err
	}
	return p, nil
}
