package mam

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/module"
)

// Purging old messages (ejabberdctl's delete_old_mam_messages TYPE DAYS): an
// administrator's delete of every archived message older than a cutoff, in
// the archives of users ("chat"), of MUC rooms ("groupchat") or both ("all").
// Whole chunks older than the cutoff are deleted with their peer-index rows;
// a chunk the cutoff falls into is rewritten without its old records (as
// retention's trim does). Each chunk's delete is conditional on the chunk
// still being there, so a trim racing with the purge makes the purge read
// again instead of writing a chunk twice.

// Purge kinds.
const (
	PurgeChat      = "chat"
	PurgeGroupchat = "groupchat"
	PurgeAll       = "all"
)

// purgeBatchOps and purgeBatchBytes bound one write of a purge.
const (
	purgeBatchOps   = 512
	purgeBatchBytes = 4 << 20
)

// DeleteOlder deletes the messages archived before cutoff in the archives of
// kind (PurgeChat: local users', PurgeGroupchat: MUC rooms', PurgeAll) and
// returns how many it deleted. It first waits for this node's queued records
// and catches up with the cluster's commits, so what another node archived
// before the call is seen.
func (m *Module) DeleteOlder(ctx context.Context, cutoff time.Time, kind string) (int, error) {
	switch kind {
	case PurgeChat, PurgeGroupchat, PurgeAll:
	default:
		return 0, fmt.Errorf("mam: message type %q: chat, groupchat or all", kind)
	}
	if m.st == nil {
		return 0, errors.New("mam: not started")
	}
	if err := m.Sync(ctx); err != nil {
		return 0, fmt.Errorf("mam: waiting for queued records: %w", err)
	}
	if err := m.st.Apply(ctx, storage.Delete(Table, "\x00barrier")); err != nil {
		return 0, fmt.Errorf("mam: catching up with the cluster: %w", err)
	}
	cut := fmt.Sprintf("%016x", uint64(cutoff.UnixNano()))
	total := 0
	for attempt := 1; ; attempt++ {
		n, err := m.purgePass(ctx, cut, kind)
		total += n
		if errors.Is(err, storage.ErrConflict) && attempt < 5 {
			continue // a chunk changed under us (a trim): read again
		}
		if err != nil {
			return total, fmt.Errorf("mam: deleting old messages (%d deleted): %w", total, err)
		}
		return total, nil
	}
}

// purgePass makes one scan of the archives and writes the deletes in
// batches; it returns how many messages the committed batches deleted.
func (m *Module) purgePass(ctx context.Context, cut, kind string) (int, error) {
	type batch struct {
		ops   []storage.Op
		bytes int
		n     int
	}
	var batches []batch
	cur := batch{}
	owners := map[string]bool{}
	err := m.tab.Scan("", func(k string, v []byte) bool {
		owner := ownerOf(k)
		if owner == k || !m.purgeKind(owner, kind) {
			return true
		}
		c, err := parseChunk(k[len(owner)+1:], v)
		if err != nil || len(c.first) < 16 || len(c.last) < 16 || c.first[:16] >= cut {
			return true
		}
		ops := append([]storage.Op{storage.Delete(Table, k).If(storage.CondPresent)}, indexDeletes(owner, &c)...)
		gone, size := c.n, 0
		if c.last[:16] >= cut {
			var keep []rec
			_ = c.records(func(_ int, r chunkRec) bool {
				if r.id[:16] >= cut {
					keep = append(keep, rec{id: r.id, dir: r.dir, with: c.peers[r.peer], body: append([]byte(nil), r.body...)})
					size += len(r.body)
				}
				return true
			})
			gone -= len(keep)
			if len(keep) > 0 {
				ops = append(ops, chunkPut(owner, keep)...)
			}
		}
		if len(cur.ops) > 0 && (len(cur.ops)+len(ops) > purgeBatchOps || cur.bytes+size > purgeBatchBytes) {
			batches = append(batches, cur)
			cur = batch{}
		}
		cur.ops = append(cur.ops, ops...)
		cur.bytes += size
		cur.n += gone
		owners[owner] = true
		return true
	})
	if err != nil {
		return 0, err
	}
	if len(cur.ops) > 0 {
		batches = append(batches, cur)
	}
	defer func() {
		m.mu.Lock()
		for o := range owners {
			delete(m.counts, o) // recounted at the next batch
		}
		m.mu.Unlock()
	}()
	n := 0
	for _, b := range batches {
		if err := m.st.Apply(ctx, b.ops...); err != nil {
			return n, err
		}
		n += b.n
	}
	return n, nil
}

// purgeKind reports whether owner's archive is one kind purges: a local
// user's archive is "chat", any other (a MUC room's) "groupchat".
func (m *Module) purgeKind(owner, kind string) bool {
	if kind == PurgeAll {
		return true
	}
	_, domain, ok := strings.Cut(owner, "@")
	user := ok && module.IsLocal(m.h, domain)
	return user == (kind == PurgeChat)
}
