// Package ephemeral owns node-owned soft-state tables (sessions, routes,
// presence): every row is tagged with the node that wrote it and that node's
// incarnation. This node writes only its own rows (storage.Ephemeral Put and
// Delete); rows of other nodes arrive through Merge and leave through DropNode
// when membership says a node (incarnation) is gone. Nothing here touches disk
// or raft. A replication layer streams local changes to peers through
// OnLocalChange and LocalRows.
//
// ephemeral imports only the storage contract; it must not import xmppd, iscsi
// or init.
package ephemeral

import (
	"sort"
	"sync"
	"sync/atomic"

	iradix "github.com/hashicorp/go-immutable-radix"

	"xedge/storage"
)

// Change is one change of a row, local or remote.
type Change struct {
	Table   string
	Row     storage.Row
	Deleted bool
}

// Set is every ephemeral table of one node's view. Safe for concurrent use.
type Set struct {
	node string
	inc  atomic.Uint64

	mu       sync.RWMutex
	tables   map[string]*Table
	onChange func(Change)
}

// New returns an empty Set for this node and incarnation.
func New(node string, incarnation uint64) *Set {
	s := &Set{node: node, tables: make(map[string]*Table)}
	s.inc.Store(incarnation)
	return s
}

// SetIncarnation changes this node's incarnation and retags the rows it wrote
// (a store that hands out tables before it knows its incarnation).
func (s *Set) SetIncarnation(inc uint64) {
	s.inc.Store(inc)
	s.mu.RLock()
	ts := make([]*Table, 0, len(s.tables))
	for _, t := range s.tables {
		ts = append(ts, t)
	}
	s.mu.RUnlock()
	for _, t := range ts {
		t.mu.Lock()
		txn := t.tree.Txn()
		t.tree.Root().Walk(func(k []byte, v interface{}) bool {
			old := v.([]storage.Row)
			for i, r := range old {
				if r.Node == s.node && r.Incarnation != inc {
					rows := append([]storage.Row(nil), old...)
					rows[i].Incarnation = inc
					txn.Insert(k, rows)
					break
				}
			}
			return false
		})
		t.tree = txn.Commit()
		t.mu.Unlock()
	}
}

// Node returns this node's name; Incarnation its incarnation.
func (s *Set) Node() string        { return s.node }
func (s *Set) Incarnation() uint64 { return s.inc.Load() }

// OnLocalChange registers fn, called (synchronously, after the change is
// visible) for every Put and Delete of this node's rows. Set it before use.
func (s *Set) OnLocalChange(fn func(Change)) {
	s.mu.Lock()
	s.onChange = fn
	s.mu.Unlock()
}

// Table returns the named table, creating it.
func (s *Set) Table(name string) *Table {
	s.mu.RLock()
	t := s.tables[name]
	s.mu.RUnlock()
	if t != nil {
		return t
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t = s.tables[name]; t == nil {
		t = &Table{set: s, name: name, tree: iradix.New()}
		s.tables[name] = t
	}
	return t
}

// Merge applies a row change received from another node.
func (s *Set) Merge(c Change) {
	s.Table(c.Table).set1(c.Row, c.Deleted)
}

// DropNode removes every row of node whose incarnation is at most incarnation
// (pass ^uint64(0) for all) and returns how many rows it removed.
func (s *Set) DropNode(node string, incarnation uint64) int {
	s.mu.RLock()
	ts := make([]*Table, 0, len(s.tables))
	for _, t := range s.tables {
		ts = append(ts, t)
	}
	s.mu.RUnlock()
	n := 0
	for _, t := range ts {
		n += t.drop(node, incarnation)
	}
	return n
}

// LocalRows returns a copy of this node's rows in every table, for a full sync
// to a peer.
func (s *Set) LocalRows() []Change {
	var out []Change
	for _, info := range s.Info() {
		t := s.Table(info.Name)
		t.Scan("", func(r storage.Row) bool {
			if r.Node == s.node {
				out = append(out, Change{Table: info.Name, Row: r})
			}
			return true
		})
	}
	return out
}

// Info describes every table for storage.Store.Tables.
func (s *Set) Info() []storage.TableInfo {
	s.mu.RLock()
	ts := make([]*Table, 0, len(s.tables))
	for _, t := range s.tables {
		ts = append(ts, t)
	}
	s.mu.RUnlock()
	out := make([]storage.TableInfo, 0, len(ts))
	for _, t := range ts {
		t.mu.Lock()
		out = append(out, storage.TableInfo{Name: t.name, Kind: "ephemeral", Copy: "node", Keys: t.tree.Len(), Bytes: t.bytes})
		t.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Table is one ephemeral table; it implements storage.Ephemeral.
type Table struct {
	set  *Set
	name string

	mu    sync.Mutex
	tree  *iradix.Tree // key -> []storage.Row sorted by node, never mutated in place
	bytes int64
}

var _ storage.Ephemeral = (*Table)(nil)

// Put writes this node's row for key.
func (t *Table) Put(key string, value []byte) {
	r := storage.Row{Key: key, Node: t.set.node, Incarnation: t.set.inc.Load(), Value: append([]byte{}, value...)}
	t.set1(r, false)
	t.notify(Change{Table: t.name, Row: r})
}

// Delete removes this node's row for key.
func (t *Table) Delete(key string) {
	r := storage.Row{Key: key, Node: t.set.node, Incarnation: t.set.inc.Load()}
	t.set1(r, true)
	t.notify(Change{Table: t.name, Row: r, Deleted: true})
}

func (t *Table) notify(c Change) {
	t.set.mu.RLock()
	fn := t.set.onChange
	t.set.mu.RUnlock()
	if fn != nil {
		fn(c)
	}
}

func rowSize(r storage.Row) int64 { return int64(len(r.Key) + len(r.Value)) }

func (t *Table) set1(r storage.Row, deleted bool) {
	k := []byte(r.Key)
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []storage.Row
	if v, ok := t.tree.Get(k); ok {
		old = v.([]storage.Row)
	}
	rows := make([]storage.Row, 0, len(old)+1)
	for _, o := range old {
		if o.Node == r.Node {
			if o.Incarnation > r.Incarnation {
				return // a late change from an older incarnation
			}
			t.bytes -= rowSize(o)
			continue
		}
		rows = append(rows, o)
	}
	if !deleted {
		rows = append(rows, r)
		t.bytes += rowSize(r)
		sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	}
	if len(rows) == 0 {
		t.tree, _, _ = t.tree.Delete(k)
	} else {
		t.tree, _, _ = t.tree.Insert(k, rows)
	}
}

func (t *Table) drop(node string, inc uint64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	txn := t.tree.Txn()
	t.tree.Root().Walk(func(k []byte, v interface{}) bool {
		old := v.([]storage.Row)
		keep := make([]storage.Row, 0, len(old))
		for _, o := range old {
			if o.Node == node && o.Incarnation <= inc {
				n++
				t.bytes -= rowSize(o)
				continue
			}
			keep = append(keep, o)
		}
		if len(keep) == len(old) {
			return false
		}
		if len(keep) == 0 {
			txn.Delete(k)
		} else {
			txn.Insert(k, keep)
		}
		return false
	})
	t.tree = txn.Commit()
	return n
}

func (t *Table) snapshot() *iradix.Tree {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.tree
}

// Get returns every live node's row for key (copies).
func (t *Table) Get(key string) []storage.Row {
	v, ok := t.snapshot().Get([]byte(key))
	if !ok {
		return nil
	}
	rows := v.([]storage.Row)
	out := make([]storage.Row, len(rows))
	for i, r := range rows {
		r.Value = append([]byte{}, r.Value...)
		out[i] = r
	}
	return out
}

// Scan calls fn for each row whose key has the prefix, in key order then node
// order, until fn returns false. It holds no lock while calling fn; the Row's
// Value must not be modified.
func (t *Table) Scan(prefix string, fn func(storage.Row) bool) {
	t.snapshot().Root().WalkPrefix([]byte(prefix), func(_ []byte, v interface{}) bool {
		for _, r := range v.([]storage.Row) {
			if !fn(r) {
				return true
			}
		}
		return false
	})
}
