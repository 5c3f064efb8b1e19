package mam

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"

	"strings"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modutil"
)

// The peer index (table mam_with) lists, for each archive and bare peer JID,
// the chunks holding messages with that peer:
//
//	"owner\x00bare peer\x00<chunk first id><chunk last id>" -> uvarint count
//
// written in the same batch as the chunk itself (chunkOps), deleted and
// rewritten with it when retention trims the chunk (trimOps), and deleted with
// the archive. A with= query walks these rows instead of every chunk of the
// archive: it counts matches from the rows alone and reads only the chunks its
// page falls into.
//
// "owner\x00\x00" (indexMarker) says the index of the archive is complete.
// Archives written before the index existed have none: queries on them read the
// chunk headers as before, and the first batch the appender writes for such an
// owner after a start is preceded by a rebuild (rebuildIndex: every chunk's rows
// and the marker, conditional on the marker's absence so two nodes do not both
// rebuild).
const WithTable = "mam_with"

// indexMarker is the key saying owner's peer index is complete.
func indexMarker(owner string) string { return modutil.Key(owner, "", "") }

// indexPrefix is the key prefix of owner's index rows for one bare peer.
func indexPrefix(owner, bare string) string { return modutil.Key(owner, bare, "") }

// bareOf returns the bare JID of a stored peer (the string itself if it does not
// parse, so that odd peers still get rows).
func bareOf(peer string) string {
	// Stored peers are JIDs as jid.JID.String writes them (normalized): the
	// bare JID is what precedes the first '/'.
	b, _, _ := strings.Cut(peer, "/")
	return b
}

// indexOps returns the index rows of one chunk: a row per bare peer.
func indexOps(owner, first, last string, peers []string, counts []int) []storage.Op {
	type bp struct {
		bare string
		n    int
	}
	var bs []bp
	for i, p := range peers {
		b := bareOf(p)
		if j := slices.IndexFunc(bs, func(x bp) bool { return x.bare == b }); j >= 0 {
			bs[j].n += counts[i]
		} else {
			bs = append(bs, bp{b, counts[i]})
		}
	}
	ops := make([]storage.Op, 0, len(bs))
	for _, b := range bs {
		ops = append(ops, storage.Put(WithTable, indexPrefix(owner, b.bare)+first+last, binary.AppendUvarint(nil, uint64(b.n))))
	}
	return ops
}

// indexDeletes returns the deletes of one chunk's index rows.
func indexDeletes(owner string, c *chunk) []storage.Op {
	var ops []storage.Op
	var seen []string
	for _, p := range c.peers {
		b := bareOf(p)
		if slices.Contains(seen, b) {
			continue
		}
		seen = append(seen, b)
		ops = append(ops, storage.Delete(WithTable, indexPrefix(owner, b)+c.first+c.last))
	}
	return ops
}

// chunkIndexOps is indexOps for a decoded chunk.
func chunkIndexOps(owner string, c *chunk) []storage.Op {
	return indexOps(owner, c.first, c.last, c.peers, c.counts)
}

// indexRow is one decoded index row.
type indexRow struct {
	first, last string
	n           int
}

// parseIndexRow reads a row: the key's suffix after the peer (first and last
// id: substrings, no copy) and the count.
func parseIndexRow(suffix string, v []byte) (indexRow, bool) {
	n, k := binary.Uvarint(v)
	if k <= 0 || len(suffix) != 2*idLen || n == 0 {
		return indexRow{}, false
	}
	return indexRow{first: suffix[:idLen], last: suffix[idLen:], n: int(n)}, true
}

// indexed reports whether owner's peer index is complete.
func (m *Module) indexed(owner string) bool {
	_, ok, err := m.with.Get(indexMarker(owner))
	return err == nil && ok
}

// rebuildIndex writes owner's index from the chunks (and the marker), unless
// the marker is there already. It returns nil when the index is complete.
func (m *Module) rebuildIndex(ctx context.Context, owner string) error {
	if m.indexed(owner) {
		return nil
	}
	// No delete of old rows first: a row another node writes with its chunk
	// between this scan and the Apply must stay. Rows of chunks deleted since
	// were deleted with them (trimOps, userRemoved).
	prefix := modutil.UserPrefix(owner)
	var ops []storage.Op
	_ = m.tab.Scan(prefix, func(k string, v []byte) bool {
		if c, err := parseChunk(k[len(prefix):], v); err == nil {
			ops = append(ops, chunkIndexOps(owner, &c)...)
		}
		return true
	})
	ops = append(ops, storage.Put(WithTable, indexMarker(owner), []byte{1}).If(storage.CondAbsent))
	err := m.st.Apply(ctx, ops...)
	if errors.Is(err, storage.ErrConflict) {
		return nil // another node rebuilt it
	}
	return err
}

// ensureIndexed makes sure the index of every owner of a batch is complete
// before the batch's chunks and rows are written: owners this node has not seen
// indexed since it started are checked; an empty archive gets its marker in the
// batch itself (extra), an archive written before the index is rebuilt first
// (rare: once after an upgrade). fresh lists the owners to remember as indexed
// once the batch is written.
func (m *Module) ensureIndexed(ctx context.Context, batch []record) (extra []storage.Op, fresh []string) {
	todo := map[string]bool{}
	m.mu.Lock()
	for _, r := range batch {
		if !m.seenIndexed[r.owner] {
			todo[r.owner] = true
		}
	}
	m.mu.Unlock()
	for owner := range todo {
		if m.indexed(owner) {
			fresh = append(fresh, owner)
			continue
		}
		empty := true
		_ = m.tab.Scan(modutil.UserPrefix(owner), func(string, []byte) bool {
			empty = false
			return false
		})
		if empty {
			extra = append(extra, storage.Put(WithTable, indexMarker(owner), []byte{1}))
			fresh = append(fresh, owner)
			continue
		}
		if err := m.rebuildIndex(ctx, owner); err != nil {
			m.h.Logger().Warn("mam: rebuilding the peer index", "owner", owner, "err", err)
			continue // queries read the chunk headers until a later batch rebuilds it
		}
		fresh = append(fresh, owner)
	}
	return extra, fresh
}

// rememberIndexed records owners whose index is complete.
func (m *Module) rememberIndexed(owners []string) {
	if len(owners) == 0 {
		return
	}
	m.mu.Lock()
	if len(m.seenIndexed) > 100000 {
		clear(m.seenIndexed)
	}
	for _, o := range owners {
		m.seenIndexed[o] = true
	}
	m.mu.Unlock()
}
