// Package memstore is a small in-memory storage.Store for xmppd's unit tests: durable
// tables are maps, nothing persists, and SetFail simulates storage.ErrUnavailable.
// xmppd itself runs on storage/local.
//
// It must not import anything from xmppd but the storage contract.
package memstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"xedge/storage"
)

// Store is an in-memory storage.Store. Fail, when set, makes Apply return it (tests
// use it to simulate storage.ErrUnavailable).
type Store struct {
	Node string

	mu     sync.RWMutex
	tables map[string]map[string][]byte
	// stamps: per table, a token replaced by every Apply that writes to it
	// (storage.Stamped).
	stamps map[string]*byte
	eph    map[string]*eph
	fail   error
}

// New returns an empty store.
func New(node string) *Store {
	return &Store{Node: node, tables: map[string]map[string][]byte{}, stamps: map[string]*byte{}, eph: map[string]*eph{}}
}

// SetFail makes every later Apply fail with err (nil to heal).
func (s *Store) SetFail(err error) { s.mu.Lock(); s.fail = err; s.mu.Unlock() }

// Start does nothing.
func (s *Store) Start(context.Context) error { return nil }

// Stop does nothing.
func (s *Store) Stop(context.Context) error { return nil }

// Declare creates a table.
func (s *Store) Declare(_ context.Context, spec storage.TableSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tables[spec.Name] == nil {
		s.tables[spec.Name] = map[string][]byte{}
		s.stamps[spec.Name] = new(byte)
	}
	return nil
}

// Durable returns a read handle.
func (s *Store) Durable(name string) (storage.Table, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.tables[name] == nil {
		return nil, fmt.Errorf("%w: %s", storage.ErrNoTable, name)
	}
	return table{s, name}, nil
}

// Apply applies a batch atomically.
func (s *Store) Apply(_ context.Context, ops ...storage.Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for _, op := range ops {
		t := s.tables[op.Table]
		if t == nil {
			return fmt.Errorf("%w: %s", storage.ErrNoTable, op.Table)
		}
		_, ok := t[op.Key]
		if (op.Cond == storage.CondAbsent && ok) || (op.Cond == storage.CondPresent && !ok) {
			return storage.ErrConflict
		}
	}
	for _, op := range ops {
		t := s.tables[op.Table]
		s.stamps[op.Table] = new(byte)
		switch op.Kind {
		case storage.OpPut:
			t[op.Key] = append([]byte(nil), op.Value...)
		case storage.OpDelete:
			delete(t, op.Key)
		case storage.OpDeletePrefix:
			for k := range t {
				if strings.HasPrefix(k, op.Key) {
					delete(t, k)
				}
			}
		}
	}
	return nil
}

// Ephemeral returns a node-owned table.
func (s *Store) Ephemeral(name string) storage.Ephemeral {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.eph[name]
	if e == nil {
		e = &eph{node: s.Node, rows: map[string][]byte{}}
		s.eph[name] = e
	}
	return e
}

// Tables describes the tables.
func (s *Store) Tables() []storage.TableInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []storage.TableInfo
	for n, t := range s.tables {
		var b int64
		for k, v := range t {
			b += int64(len(k) + len(v))
		}
		out = append(out, storage.TableInfo{Name: n, Kind: "durable", Copy: "ram", Keys: len(t), Bytes: b})
	}
	for n, e := range s.eph {
		e.mu.Lock()
		out = append(out, storage.TableInfo{Name: n, Kind: "ephemeral", Copy: "node", Keys: len(e.rows)})
		e.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status describes the store.
func (s *Store) Status() storage.Status {
	return storage.Status{Mode: "ram-only", Backend: "memstore", Node: s.Node}
}

type table struct {
	s    *Store
	name string
}

// Stamp implements storage.Stamped (Declare made the first one).
func (t table) Stamp() any {
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	return t.s.stamps[t.name]
}

func (t table) Get(key string) ([]byte, bool, error) {
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	v, ok := t.s.tables[t.name][key]
	return append([]byte(nil), v...), ok, nil
}

func (t table) keys(prefix string) []string {
	var ks []string
	for k := range t.s.tables[t.name] {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

func (t table) Scan(prefix string, fn func(string, []byte) bool) error {
	t.s.mu.RLock()
	ks := t.keys(prefix)
	vals := make([][]byte, len(ks))
	for i, k := range ks {
		vals[i] = append([]byte(nil), t.s.tables[t.name][k]...)
	}
	t.s.mu.RUnlock()
	for i, k := range ks {
		if !fn(k, vals[i]) {
			break
		}
	}
	return nil
}

func (t table) Count(prefix string) (int, error) {
	t.s.mu.RLock()
	defer t.s.mu.RUnlock()
	return len(t.keys(prefix)), nil
}

type eph struct {
	node string
	mu   sync.Mutex
	rows map[string][]byte
}

func (e *eph) Put(key string, value []byte) {
	e.mu.Lock()
	e.rows[key] = append([]byte(nil), value...)
	e.mu.Unlock()
}

func (e *eph) Delete(key string) { e.mu.Lock(); delete(e.rows, key); e.mu.Unlock() }

func (e *eph) Get(key string) []storage.Row {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.rows[key]; ok {
		return []storage.Row{{Key: key, Node: e.node, Value: append([]byte(nil), v...)}}
	}
	return nil
}

func (e *eph) Scan(prefix string, fn func(storage.Row) bool) {
	e.mu.Lock()
	var rows []storage.Row
	for k, v := range e.rows {
		if strings.HasPrefix(k, prefix) {
			rows = append(rows, storage.Row{Key: k, Node: e.node, Value: append([]byte(nil), v...)})
		}
	}
	e.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool { return rows[i].Key < rows[j].Key })
	for _, r := range rows {
		if !fn(r) {
			return
		}
	}
}
