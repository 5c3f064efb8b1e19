package mam

import (
	"context"
	"fmt"
	"testing"

	"xedge/storage"
	"xedge/storage/tables"
)

// BenchmarkQuery100k: the last page of 50 of a 100,000-message archive (10 peers,
// chunks of 500 as a busy node's batches make them), without and with a with=
// filter: what the bench's MAM workload asks, without the network. On the
// 2026-12-06 machine (load ~30): about 2.0 ms and 2.6 ms, 7,000 allocations (the
// chunk headers: two passes over 200 chunks); parsing headers without
// allocating is the next step if queries need to be faster.
func BenchmarkQuery100k(b *testing.B) {
	f := newFixture(b, Options{Max: -1, RAMMax: -1})
	owner := "alice@example.org"
	var ops []storage.Op
	for i := 0; i < 100000; {
		var rs []rec
		for k := 0; k < 500; k++ {
			rs = append(rs, rec{id: fmt.Sprintf("%016x0001%08x", 1_000_000+i, i), dir: Out, with: fmt.Sprintf("p%d@example.org/r", i%10),
				body: []byte(fmt.Sprintf("<message xmlns='jabber:client' type='chat'><body>archived message %d</body></message>", i))})
			i++
		}
		ops = append(ops, chunkPut(owner, rs)...)
	}
	ops = append(ops, storage.Put(WithTable, indexMarker(owner), []byte{1}))
	// The durable tables' own state machine (what the local and replicated
	// stores read from), not the test host's copying memstore.
	st := tables.New()
	for _, name := range []string{Table, WithTable} {
		if err := st.Apply(tables.DeclareCommand(storage.TableSpec{Name: name})); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Apply(tables.ApplyCommand(ops...)); err != nil {
		b.Fatal(err)
	}
	tab, err := st.Table(Table)
	if err != nil {
		b.Fatal(err)
	}
	f.m.tab = tab
	if f.m.with, err = st.Table(WithTable); err != nil {
		b.Fatal(err)
	}
	for _, with := range []string{"", "p3@example.org"} {
		b.Run("with="+with, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				p, err := f.m.Query(context.Background(), owner, Query{Max: 50, BeforeSet: true, With: with})
				if err != nil || len(p.Items) != 50 {
					b.Fatalf("%d items, %v", len(p.Items), err)
				}
			}
		})
	}
}
