package mam

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
)

// A chunk is one row of the mam table: the records one appender batch wrote for
// one owner, sorted by id, under the key "owner\x00<first id>". Packing a batch's
// records per owner into one row is what keeps archiving cheap: the store's work
// (tree nodes, log records, snapshot entries) is per row, and a busy node's batch
// holds many records per owner.
//
// Layout (all integers uvarint):
//
//	chunkMagic
//	n                      records
//	last id                idLen bytes (the first id is the key's suffix)
//	npeers, then per peer: len, bytes, count of records with this peer
//	per record: id (idLen bytes), direction byte, peer index, body length
//	bodies, concatenated (each a message as XML on a jabber:client stream)
//
// The header alone answers counts (per peer too) and the id range, so a query
// skips a chunk without reading its records when it can. A row whose first byte
// is In or Out is a single record of the earlier one-row-per-message format (its
// id is the key's suffix): both are read.
const chunkMagic = 0x02

// idLen is the length of an archive id: 16 hex nanoseconds, 4 hex node tag, 8
// hex sequence.
const idLen = 28

// maxChunkBytes bounds one chunk's value: a batch's records for one owner beyond
// it start another chunk.
const maxChunkBytes = 1 << 20

var errBadChunk = errors.New("mam: malformed archive row")

// rec is one record being written.
type rec struct {
	id   string
	dir  byte
	with string
	body []byte
}

// encodeChunk encodes records (sorted by id, at least one) as a chunk value.
func encodeChunk(rs []rec) []byte {
	type peer struct {
		name  string
		count int
	}
	var peers []peer
	idx := make([]int, len(rs))
	size := 16 + idLen
	for i, r := range rs {
		j := slices.IndexFunc(peers, func(p peer) bool { return p.name == r.with })
		if j < 0 {
			j = len(peers)
			peers = append(peers, peer{name: r.with})
			size += len(r.with) + 8
		}
		peers[j].count++
		idx[i] = j
		size += idLen + 8 + len(r.body)
	}
	b := make([]byte, 0, size)
	b = append(b, chunkMagic)
	b = binary.AppendUvarint(b, uint64(len(rs)))
	b = append(b, rs[len(rs)-1].id...)
	b = binary.AppendUvarint(b, uint64(len(peers)))
	for _, p := range peers {
		b = binary.AppendUvarint(b, uint64(len(p.name)))
		b = append(b, p.name...)
		b = binary.AppendUvarint(b, uint64(p.count))
	}
	for i, r := range rs {
		b = append(b, r.id...)
		b = append(b, r.dir)
		b = binary.AppendUvarint(b, uint64(idx[i]))
		b = binary.AppendUvarint(b, uint64(len(r.body)))
	}
	for _, r := range rs {
		b = append(b, r.body...)
	}
	return b
}

// chunk is a decoded chunk header; its slices point into the row's value.
type chunk struct {
	first, last string
	n           int
	peers       []string
	counts      []int
	v           []byte // the whole value
	recs        int    // offset of the record table in v (legacy: -1)
}

// parseChunk reads the header of the row (key suffix first).
func parseChunk(first string, v []byte) (chunk, error) {
	var c chunk
	err := c.parse(first, v, nil)
	return c, err
}

// parse reads the header of the row (key suffix first) into c, reusing c's
// peers and counts slices. names, if not nil, interns the peers' JIDs: a query
// reads the headers of every chunk of an archive, each naming the same few
// peers, and a string per peer per chunk was a fifth of its allocation.
func (c *chunk) parse(first string, v []byte, names map[string]string) error {
	*c = chunk{first: first, v: v, peers: c.peers[:0], counts: c.counts[:0]}
	err := c.header(v, names)
	if err != nil {
		c.peers, c.counts = c.peers[:0], c.counts[:0]
	}
	return err
}

func (c *chunk) header(v []byte, names map[string]string) error {
	if len(v) == 0 {
		return errBadChunk
	}
	if v[0] == In || v[0] == Out {
		_, w, _, ok := peek(v)
		if !ok {
			return errBadChunk
		}
		c.last, c.n, c.peers, c.counts, c.recs = c.first, 1, append(c.peers, w), append(c.counts, 1), -1
		return nil
	}
	if v[0] != chunkMagic {
		return errBadChunk
	}
	p := 1
	uv := func() (int, bool) {
		x, k := binary.Uvarint(v[p:])
		if k <= 0 || x > uint64(len(v)) {
			return 0, false
		}
		p += k
		return int(x), true
	}
	n, ok := uv()
	if !ok || n == 0 || p+idLen > len(v) {
		return errBadChunk
	}
	c.n = n
	c.last = string(v[p : p+idLen])
	p += idLen
	np, ok := uv()
	if !ok || np > n {
		return errBadChunk
	}
	c.peers, c.counts = slices.Grow(c.peers, np)[:np], slices.Grow(c.counts, np)[:np]
	for i := range np {
		l, ok := uv()
		if !ok || p+l > len(v) {
			return errBadChunk
		}
		if names == nil {
			c.peers[i] = string(v[p : p+l])
		} else if name, ok := names[string(v[p:p+l])]; ok {
			c.peers[i] = name
		} else {
			c.peers[i] = string(v[p : p+l])
			names[c.peers[i]] = c.peers[i]
		}
		p += l
		if c.counts[i], ok = uv(); !ok {
			return errBadChunk
		}
	}
	c.recs = p
	return nil
}

// chunkRec is one record of a chunk; body points into the chunk's value.
type chunkRec struct {
	id   string
	dir  byte
	peer int
	body []byte
}

// records decodes the record table and bodies, calling fn for each record in id
// order until fn returns false.
func (c *chunk) records(fn func(i int, r chunkRec) bool) error {
	if c.recs < 0 {
		_, _, raw, _ := peek(c.v)
		fn(0, chunkRec{id: c.first, dir: c.v[0], body: raw})
		return nil
	}
	v := c.v
	// The bodies start after the record table: a first walk finds where, the
	// second decodes each entry again beside its body (no list of the
	// entries: it was a fifth of what a with= query allocated). The ids are
	// substrings of one copy of the table (one allocation, not one per record).
	body := c.recs
	for range c.n {
		_, _, _, next, ok := c.entry(v, body)
		if !ok {
			return errBadChunk
		}
		body = next
	}
	table := string(v[c.recs:body])
	p := c.recs
	for i := range c.n {
		dir, peer, n, next, _ := c.entry(v, p)
		if n > len(v)-body {
			return errBadChunk
		}
		o := p - c.recs
		if !fn(i, chunkRec{id: table[o : o+idLen], dir: dir, peer: peer, body: v[body : body+n]}) {
			return nil
		}
		p, body = next, body+n
	}
	return nil
}

// entry decodes the record-table entry at v[p:] (its id is v[p:p+idLen]): the
// direction, the peer's index, the body's length and where the next entry
// starts; ok is false if it is cut short or out of range.
func (c *chunk) entry(v []byte, p int) (dir byte, peer, n, next int, ok bool) {
	if p+idLen+1 > len(v) {
		return 0, 0, 0, 0, false
	}
	dir = v[p+idLen]
	p += idLen + 1
	x, k := binary.Uvarint(v[p:])
	if k <= 0 || x >= uint64(len(c.peers)) {
		return 0, 0, 0, 0, false
	}
	p += k
	peer = int(x)
	x, k = binary.Uvarint(v[p:])
	if k <= 0 || x > uint64(len(v)) {
		return 0, 0, 0, 0, false
	}
	return dir, peer, int(x), p + k, true
}

// ownerOf returns the owner part of a mam key ("owner\x00id").
func ownerOf(key string) string {
	if i := strings.LastIndexByte(key, 0); i >= 0 {
		return key[:i]
	}
	return key
}
