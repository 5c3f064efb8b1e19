package modtest

import (
	"context"
	"sort"
	"strings"
	"sync"

	"xedge/storage"
)

// LagStore is one node's view of a shared store that lags: reads of its Lagging tables
// see them as they were at its last Apply or CatchUp (a raft follower that has
// not yet applied the leader's latest commits; its own Apply catches it up, as
// the replicated store's Apply returns once this node applied the batch). Other
// tables are read through. Call CatchUp once the module has declared its tables.
type LagStore struct {
	storage.Store
	Lagging []string

	mu   sync.Mutex
	snap map[string]map[string][]byte
}

// CatchUp makes the view current.
func (l *LagStore) CatchUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap = map[string]map[string][]byte{}
	for _, name := range l.Lagging {
		t, err := l.Store.Durable(name)
		if err != nil {
			continue
		}
		rows := map[string][]byte{}
		_ = t.Scan("", func(k string, v []byte) bool { rows[k] = append([]byte(nil), v...); return true })
		l.snap[name] = rows
	}
}

// ReadBarrier implements storage.ReadBarrier: the view catches up.
func (l *LagStore) ReadBarrier(context.Context) error {
	l.CatchUp()
	return nil
}

// Apply writes through and catches the view up.
func (l *LagStore) Apply(ctx context.Context, ops ...storage.Op) error {
	err := l.Store.Apply(ctx, ops...)
	l.CatchUp()
	return err
}

// Durable returns the lagging view of a table in Lagging.
func (l *LagStore) Durable(name string) (storage.Table, error) {
	for _, t := range l.Lagging {
		if t == name {
			return lagTable{l, name}, nil
		}
	}
	return l.Store.Durable(name)
}

type lagTable struct {
	l    *LagStore
	name string
}

func (t lagTable) rows() map[string][]byte {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	return t.l.snap[t.name]
}

func (t lagTable) Get(k string) ([]byte, bool, error) {
	v, ok := t.rows()[k]
	return append([]byte(nil), v...), ok, nil
}

func (t lagTable) Scan(prefix string, fn func(string, []byte) bool) error {
	rows := t.rows()
	keys := make([]string, 0, len(rows))
	for k := range rows {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !fn(k, rows[k]) {
			break
		}
	}
	return nil
}

func (t lagTable) Count(prefix string) (int, error) {
	n := 0
	_ = t.Scan(prefix, func(string, []byte) bool { n++; return true })
	return n, nil
}
