package mam

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
)

// modelRec is one message of the reference model.
type modelRec struct {
	id, with, body string
}

// modelWith is withMatches memoized (the model test asks it millions of times
// for a handful of peers).
func modelWith(filter jid.JID, stored string) bool {
	k := filter.String() + " " + stored
	if v, ok := withMemo.Load(k); ok {
		return v.(bool)
	}
	v := withMatches(filter, stored)
	withMemo.Store(k, v)
	return v
}

var withMemo sync.Map

// modelQuery answers q over recs (sorted by id) the naive way: filter, then page.
func modelQuery(recs []modelRec, q Query) (ids []string, index, count int, complete, notFound bool) {
	var with jid.JID
	if q.With != "" {
		with, _ = jid.Parse(q.With)
	}
	seen := func(id string) bool {
		return slices.ContainsFunc(recs, func(r modelRec) bool { return r.id == id })
	}
	if (q.After != "" && !seen(q.After)) || (q.Before != "" && !seen(q.Before)) {
		return nil, 0, 0, false, true
	}
	var m []modelRec
	for _, r := range recs {
		t := idTime(r.id)
		if (!q.Start.IsZero() && t.Before(q.Start)) || (!q.End.IsZero() && t.After(q.End)) {
			continue
		}
		if q.With != "" && !modelWith(with, r.with) {
			continue
		}
		m = append(m, r)
	}
	size := q.Max
	switch {
	case q.MaxZero:
		size = 0
	case size <= 0:
		size = DefaultPageSize
	}
	lo, hi := 0, len(m)
	if q.BeforeSet {
		if q.Before != "" {
			hi = 0
			for hi < len(m) && m[hi].id < q.Before {
				hi++
			}
		}
		lo = max(0, hi-size)
		complete = lo == 0
	} else {
		if q.After != "" {
			for lo < len(m) && m[lo].id <= q.After {
				lo++
			}
		}
		hi = min(len(m), lo+size)
		complete = hi >= len(m)
	}
	for _, r := range m[lo:hi] {
		ids = append(ids, r.id)
	}
	return ids, lo, len(m), complete, false
}

// TestQueryMatchesModel writes archives as chunks of random sizes and checks
// random queries (with as bare and full JID, start/end, RSM after/before/max,
// alone and combined; RSM ids of the filtered results too, so the peer index
// answers them) against a naive model. Layouts: one writer (chunks in id
// order, with their peer index); two writers (chunks overlapping in id range);
// rows of the earlier one-row-per-message format without an index, queried
// before and after the index is rebuilt; the module's own write path (batches
// of several owners); an archive trimmed by retention (across chunk
// boundaries); and the same archive read by a module started afresh on the same
// store (a restart).
func TestQueryMatchesModel(t *testing.T) {
	peers := []string{"bob@example.org/a", "bob@example.org/b", "carol@example.org/c", "room@conference.example.org/x"}
	for _, layout := range []string{"ordered", "overlapping", "legacy", "legacy-rebuilt", "appender", "trimmed", "restarted"} {
		t.Run(layout, func(t *testing.T) {
			f := newFixture(t, Options{Max: -1, RAMMax: -1})
			rng := rand.New(rand.NewPCG(1, uint64(len(layout))))
			owner := "alice@example.org"
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var recs []modelRec
			var ops []storage.Op
			mk := func(i int, tag string) rec {
				id := fmt.Sprintf("%016x%s%08x", uint64(base.Add(time.Duration(i)*time.Second).UnixNano()), tag, i)
				w := peers[rng.IntN(len(peers))]
				body := fmt.Sprintf("b%d", i)
				recs = append(recs, modelRec{id, w, body})
				return rec{id: id, dir: Out, with: w, body: []byte("<message xmlns='jabber:client' type='chat'><body>" + body + "</body></message>")}
			}
			indexed := true
			const n = 400
			switch layout {
			case "ordered", "trimmed", "restarted":
				for i := 0; i < n; {
					k := 1 + rng.IntN(40)
					var rs []rec
					for ; k > 0 && i < n; k-- {
						rs = append(rs, mk(i, "0001"))
						i++
					}
					ops = append(ops, chunkPut(owner, rs)...)
				}
			case "overlapping":
				// Two nodes' writers interleave in time, each with its own chunks.
				var a, b []rec
				for i := range n {
					if rng.IntN(2) == 0 {
						a = append(a, mk(i, "000a"))
					} else {
						b = append(b, mk(i, "000b"))
					}
				}
				for _, rs := range [][]rec{a, b} {
					for len(rs) > 0 {
						k := min(len(rs), 1+rng.IntN(30))
						ops = append(ops, chunkPut(owner, rs[:k])...)
						rs = rs[k:]
					}
				}
			case "legacy", "legacy-rebuilt":
				indexed = false
				for i := 0; i < n; i++ {
					r := mk(i, "0001")
					if i%3 == 0 {
						v := append([]byte{r.dir}, r.with...)
						v = append(v, 0)
						ops = append(ops, storage.Put(Table, modutil.Key(owner, r.id), append(v, r.body...)))
					} else {
						ops = append(ops, storage.Put(Table, modutil.Key(owner, r.id), encodeChunk([]rec{r})))
					}
				}
			case "appender":
				// Batches as the appender takes them, with another owner's
				// records mixed in; the first batch finds the archive empty.
				for i := 0; i < n; {
					var batch []record
					for k := 1 + rng.IntN(60); k > 0 && i < n; k-- {
						batch = append(batch, record{owner: owner, rec: mk(i, "0001")})
						batch = append(batch, record{owner: "carol@example.org", rec: rec{id: fmt.Sprintf("%016x0001%08x", i, i), dir: In, with: owner, body: []byte("<message xmlns='jabber:client'/>")}})
						i++
					}
					f.m.write(batch)
				}
			}
			if indexed && layout != "appender" {
				ops = append(ops, storage.Put(WithTable, indexMarker(owner), []byte{1}))
			}
			if len(ops) > 0 {
				if err := f.h.Store().Apply(context.Background(), ops...); err != nil {
					t.Fatal(err)
				}
			}
			slices.SortFunc(recs, func(a, b modelRec) int { return strings.Compare(a.id, b.id) })
			switch layout {
			case "legacy-rebuilt":
				if err := f.m.rebuildIndex(context.Background(), owner); err != nil {
					t.Fatal(err)
				}
				indexed = true
			case "trimmed":
				// 3 times: a chunk is cut into each time (and whole ones dropped).
				for _, k := range []int{7, 33, 61} {
					if err := f.h.Store().Apply(context.Background(), f.m.trimOps(owner, k)...); err != nil {
						t.Fatal(err)
					}
					recs = recs[k:]
				}
			case "restarted":
				m := New(Options{Max: -1, RAMMax: -1})
				if err := m.Start(context.Background(), f.h); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = m.Stop(context.Background()) })
				f.m = m
			}
			if got := f.m.indexed(owner); got != indexed {
				t.Fatalf("index complete: %v, want %v", got, indexed)
			}
			withs := []string{"bob@example.org", "bob@example.org/b", "carol@example.org", "nobody@example.org", "room@conference.example.org"}
			before := f.m.indexAnswered.Load()
			for i := range 200 {
				var q Query
				if rng.IntN(3) != 0 {
					q.With = withs[rng.IntN(len(withs))]
				}
				if rng.IntN(3) == 0 {
					q.Start = base.Add(time.Duration(rng.IntN(n)) * time.Second)
				}
				if rng.IntN(3) == 0 {
					q.End = base.Add(time.Duration(rng.IntN(n)) * time.Second)
				}
				q.Max = rng.IntN(60)
				q.MaxZero = q.Max == 0 && rng.IntN(2) == 0
				// RSM ids: any archived message's, or (what a client paging
				// through a filtered view sends) one of the matches'.
				pick := func() string {
					if q.With != "" && rng.IntN(2) == 0 {
						j, _ := jid.Parse(q.With)
						var m []string
						for _, r := range recs {
							if modelWith(j, r.with) {
								m = append(m, r.id)
							}
						}
						if len(m) > 0 {
							return m[rng.IntN(len(m))]
						}
					}
					return recs[rng.IntN(len(recs))].id
				}
				switch rng.IntN(5) {
				case 0:
					q.After = pick()
				case 1:
					q.Before, q.BeforeSet = pick(), true
				case 2:
					q.BeforeSet = true
				case 3:
					if rng.IntN(4) == 0 {
						q.After = "0000"
					}
				}
				ids, index, count, complete, notFound := modelQuery(recs, q)
				p, err := f.m.Query(context.Background(), owner, q)
				if notFound {
					if err != ErrItemNotFound {
						t.Fatalf("query %d %+v: err %v, want item-not-found", i, q, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("query %d %+v: %v", i, q, err)
				}
				var got []string
				for _, it := range p.Items {
					got = append(got, it.ID)
					want := recs[slices.IndexFunc(recs, func(r modelRec) bool { return r.id == it.ID })]
					if it.With != want.with || it.Msg.ChildText("", "body") != want.body {
						t.Fatalf("query %d: item %s is %s/%q, want %s/%q", i, it.ID, it.With, it.Msg.ChildText("", "body"), want.with, want.body)
					}
				}
				if !slices.Equal(got, ids) || p.Index != index || p.Count != count || p.Complete != complete {
					t.Fatalf("query %d %+v:\n got %v index %d count %d complete %v\nwant %v index %d count %d complete %v",
						i, q, got, p.Index, p.Count, p.Complete, ids, index, count, complete)
				}
			}
			// The index must have answered (an ordered, indexed archive) or
			// not (no index; overlapping chunks fall back).
			used := f.m.indexAnswered.Load() - before
			if wantUsed := indexed && layout != "overlapping"; (used > 30) != wantUsed {
				t.Fatalf("the peer index answered %d queries (expected it to answer: %v)", used, wantUsed)
			}
		})
	}
}

// A batch becomes one row per owner, and trimming removes the oldest messages
// across chunk boundaries, rewriting the chunk it cuts into.
func TestChunksPerBatchAndTrim(t *testing.T) {
	f := newFixture(t, Options{Max: -1, RAMMax: -1})
	var batch []record
	for i := range 10 {
		for _, o := range []string{"a@example.org", "b@example.org"} {
			batch = append(batch, record{owner: o, rec: rec{id: fmt.Sprintf("%016x0001%08x", 1000+i, i), dir: In, with: "c@example.org",
				body: []byte(fmt.Sprintf("<message xmlns='jabber:client'><body>%d</body></message>", i))}})
		}
	}
	ops := chunkOps(batch[:12])
	ops = append(ops, chunkOps(batch[12:])...)
	if n := len(slices.DeleteFunc(slices.Clone(ops), func(o storage.Op) bool { return o.Table != Table })); n != 4 {
		t.Fatalf("%d rows for 2 batches of 2 owners", n)
	}
	if err := f.h.Store().Apply(context.Background(), ops...); err != nil {
		t.Fatal(err)
	}
	if got := len(f.h.MemStore().Keys(Table)); got != 4 {
		t.Fatalf("%d rows", got)
	}
	if err := f.h.Store().Apply(context.Background(), f.m.trimOps("a@example.org", 7)...); err != nil {
		t.Fatal(err)
	}
	p, err := f.m.Query(context.Background(), "a@example.org", Query{})
	if err != nil || p.Count != 3 || p.Items[0].Msg.ChildText("", "body") != "7" {
		t.Fatalf("after trim: %+v %v", p, err)
	}
	if f.m.archiveLen("b@example.org") != 10 {
		t.Fatal("trim touched another archive")
	}
}

// SetLimits (the mam-max and mam-ram-max settings) replaces the caps of Options.
func TestSetLimits(t *testing.T) {
	f := newFixture(t, Options{Max: 100, RAMMax: 50})
	f.m.SetLimits(-1, 3) // memstore reports ram-only: 3 applies
	f.send(f.alice, "bob@example.org", "m", 6)
	f.bob.Take()
	if rs, _, _ := f.query(f.bob, nil); bodies(rs) != "m3 m4 m5 " {
		t.Fatalf("capped by SetLimits: %q", bodies(rs))
	}
	f.m.SetLimits(-1, -1) // unlimited
	f.send(f.alice, "bob@example.org", "n", 6)
	f.bob.Take()
	if rs, _, _ := f.query(f.bob, nil); len(rs) != 9 {
		t.Fatalf("unlimited: %q", bodies(rs))
	}
}
