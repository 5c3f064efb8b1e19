// Package mam implements message archive management (XEP-0313, urn:xmpp:mam:2)
// with unique and stable stanza IDs (XEP-0359) for local accounts: chat and normal
// messages with a body are archived in both directions, the delivered copy of an
// archived incoming message carries <stanza-id by='user@domain' id='...'/> (any
// such element a sender forged for our user is removed first), and the owner
// queries the archive with data-form filters (with, start, end), RSM paging
// (XEP-0059) and archiving preferences (default always/roster/never plus
// always/never JID lists).
//
// Where a message is archived: the sender's copy on the node of the sending
// session (EvC2SIn), the recipient's copy on the node that delivers it to the
// recipient or stores it offline (EvDeliver, before the delivery rules: the router
// of the cluster hands a message to the node of the recipient's session, or
// handles it on the receiving node when the recipient is offline).
//
// The write path batches. Durable tables are raft-replicated and one commit per
// message would cap throughput at the store's commit rate (~600 commits/s), far
// below routing. So the hooks only encode the record and queue it; one appender
// goroutine per node takes everything queued (up to MaxBatch records) and writes
// it in one Store.Apply, while the next batch accumulates. The message is
// delivered before its archive record is committed: a crash of the node, or a
// store that stays unavailable past the retries, loses the records still queued
// (at most the queue, typically the last few milliseconds of traffic); a queue
// that is full drops the new record (counted in Dropped, logged) instead of
// stalling message routing. A query waits (bounded) until what this node queued
// before it is committed, so a client sees its own recent messages.
//
// Retention: each archive keeps at most Options.Max messages (oldest dropped, by
// the appender after a batch), or Options.RAMMax while the store is not durable
// (Status().Mode "ram-only" or "degraded-ram": the archive then lives in RAM only
// and is gone after a restart of the node or cluster).
//
// Tables (durable, disc): mam ("owner\x00<id>" -> direction, peer JID, message XML)
// where id is 16 hex nanoseconds, 4 hex node tag and 8 hex sequence, so keys sort
// by time; mam_prefs ("owner" -> preferences, JSON). The owner is a bare JID's
// string for the exported API (Archive.Append, Archive.Query), which a MUC service
// may use with a room JID; the user module uses "user@domain".
//
// It must not import the xmppd core or other modules.
package mam

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS        = "urn:xmpp:mam:2"
	NSSID     = "urn:xmpp:sid:0"
	NSRSM     = "http://jabber.org/protocol/rsm"
	NSData    = "jabber:x:data"
	NSForward = "urn:xmpp:forward:0"
	NSDelay   = "urn:xmpp:delay"
	NSHints   = "urn:xmpp:hints"
)

// Tables.
const (
	Table      = "mam"
	PrefsTable = "mam_prefs"
)

// Defaults.
const (
	DefaultMax      = 10000
	DefaultRAMMax   = 1000
	DefaultQueue    = 65536
	MaxBatch        = 2048
	DefaultPageSize = 50
	// CommitInterval is the appender's group-commit window: while traffic is
	// light it commits at most this often, so a busy node makes few, large
	// batches (each commit is a durable write: an fdatasync on a single node,
	// a raft round on a cluster) instead of one per few messages.
	CommitInterval = 25 * time.Millisecond
	MaxPageSize    = 250
)

// Options configure the module.
type Options struct {
	// Max is the per-archive message cap (0: DefaultMax; < 0: unlimited).
	Max int
	// RAMMax is the cap while the store is not durable (0: DefaultRAMMax).
	RAMMax int
	// Queue bounds the records waiting for the appender (0: DefaultQueue).
	Queue int
	// InRoster reports whether contact (bare JID) is in user's roster, for the
	// default 'roster' preference; nil: nobody is.
	InRoster func(user, contact string) bool
	// Default is the preference default for users who set none ("" = always).
	Default string
}

// Direction of an archived message, seen from the owner.
const (
	In  byte = 'i'
	Out byte = 'o'
)

// Item is one archived message.
type Item struct {
	ID   string
	Time time.Time
	Dir  byte
	With string // peer JID as addressed (full or bare)
	Msg  *xmlstream.Element
}

type record struct {
	owner string
	rec
}

// Module is the MAM module; it is also the Archive other modules may use.
type Module struct {
	opt  Options
	h    module.Host
	st   storage.Store
	tab  storage.Table
	pref storage.Table
	with storage.Table // the peer index (index.go)
	tag  string
	seq  atomic.Uint32
	now  func() time.Time

	// idMu makes a node's ids and its queue order the same: an id is taken and
	// its record queued under it, so the appender's batches, and the chunks they
	// become, never overlap in id range (a query then reads chunks in key order).
	idMu   sync.Mutex
	lastNS int64

	maxOverride, ramMaxOverride atomic.Int64 // SetLimits

	q       chan record
	kick    chan struct{} // Sync: commit now
	queued  atomic.Uint64 // records accepted into q
	mu      sync.Mutex
	cond    *sync.Cond
	settled uint64 // records written or given up, in queue order
	counts  map[string]int
	// seenIndexed: owners whose peer index this node found or made complete
	// (under mu).
	seenIndexed map[string]bool
	dropped     atomic.Uint64
	// indexAnswered counts with= queries the peer index answered (tests).
	indexAnswered atomic.Int64
	lastLog       atomic.Int64
	stop          chan struct{}
	done          chan struct{}
	start         sync.Once
}

// New returns the module.
func New(o Options) *Module {
	if o.Max == 0 {
		o.Max = DefaultMax
	}
	if o.RAMMax == 0 {
		o.RAMMax = DefaultRAMMax
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Default == "" {
		o.Default = "always"
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	m := &Module{opt: o, now: time.Now, tag: fmt.Sprintf("%04x", binary.BigEndian.Uint16(b[:])),
		q: make(chan record, o.Queue), kick: make(chan struct{}, 1), counts: map[string]int{}, seenIndexed: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// Name implements module.Module.
func (*Module) Name() string { return "mam" }

// Start declares the tables, registers handlers and hooks and starts the appender.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h, m.st = h, h.Store()
	if err := modutil.Declare(ctx, m.st, Table, PrefsTable, WithTable); err != nil {
		return fmt.Errorf("mam: %w", err)
	}
	var err error
	if m.tab, err = m.st.Durable(Table); err != nil {
		return fmt.Errorf("mam: %w", err)
	}
	if m.pref, err = m.st.Durable(PrefsTable); err != nil {
		return fmt.Errorf("mam: %w", err)
	}
	if m.with, err = m.st.Durable(WithTable); err != nil {
		return fmt.Errorf("mam: %w", err)
	}
	h.DiscoFeature(NS)
	h.DiscoFeature(NSSID)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvC2SIn, 25, m.sent)
	h.Hook(module.EvDeliver, 45, m.received)
	h.Hook(module.EvUserRemoved, 50, m.userRemoved)
	go m.appender()
	return nil
}

// Stop writes what is queued (bounded by ctx) and stops the appender.
func (m *Module) Stop(ctx context.Context) error {
	m.start.Do(func() { close(m.stop) })
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mam: stop: %w", ctx.Err())
	}
}

// Dropped returns how many records were not archived (queue full, store failed).
func (m *Module) Dropped() uint64 { return m.dropped.Load() }

// Archivable reports whether msg is archived: a chat or normal message with a
// body (XEP-0313 §5.1.1 leaves the choice to the server; this is what ejabberd
// and Prosody store), unless it carries <no-store/> or <no-permanent-store/>
// (XEP-0334); <store/> archives a message without body.
func Archivable(msg *xmlstream.Element) bool {
	if msg == nil || msg.Local != "message" {
		return false
	}
	switch modutil.Type(msg) {
	case "normal", "chat":
	default:
		return false
	}
	switch {
	case msg.Child(NSHints, "no-store") != nil, msg.Child(NSHints, "no-permanent-store") != nil:
		return false
	case msg.Child(NSHints, "store") != nil:
		return true
	}
	return msg.Child("", "body") != nil
}

// newID returns a fresh archive id: time-ordered, unique per node and tag, never
// below the previous one of this node (a clock stepping back does not reorder
// ids). Called with idMu held.
func (m *Module) newID(t time.Time) string {
	ns := t.UnixNano()
	if ns < m.lastNS {
		ns = m.lastNS
	}
	m.lastNS = ns
	return fmt.Sprintf("%016x%s%08x", uint64(ns), m.tag, m.seq.Add(1))
}

func idTime(id string) time.Time {
	if len(id) < 16 {
		return time.Time{}
	}
	n, err := strconv.ParseUint(id[:16], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

// sent archives a message a local session sends, in the sender's archive.
func (m *Module) sent(_ context.Context, _ module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if !Archivable(st) || ev.From.Local == "" {
		return false
	}
	to := ev.To
	if to.IsZero() || to.Bare() == ev.From.Bare() {
		return false // to oneself: archived once, on delivery
	}
	owner := ev.From.Bare().String()
	if !m.wants(module.UserKey(m.h, ev.From), owner, to) {
		return false
	}
	m.idMu.Lock()
	m.enqueue(owner, m.newID(m.now()), Out, to.String(), st) // encoded now: no copy
	m.idMu.Unlock()
	return false
}

// received archives a message about to be delivered to a local account and stamps
// the stanza-id on it.
func (m *Module) received(_ context.Context, _ module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "message" || ev.To.Local == "" {
		return false
	}
	strip(st, ev.To)
	if !Archivable(st) {
		return false
	}
	owner := ev.To.Bare().String()
	if !m.wants(module.UserKey(m.h, ev.To), owner, ev.From) {
		return false
	}
	m.idMu.Lock()
	id := m.newID(m.now())
	st.Append(xmlstream.New(NSSID, "stanza-id", "by", owner, "id", id))
	m.enqueue(owner, id, In, ev.From.String(), st) // encoded now: no copy
	m.idMu.Unlock()
	return false
}

// strip removes <stanza-id/> elements claiming to be by the bare JID of owner
// (XEP-0359 §3.1). It runs on every message delivered to a local account (once
// per occupant in a room's fan-out, whose copies carry the room's stanza-id):
// it neither allocates nor rewrites the stanza when nothing is forged, and
// parses a stanza-id's by only, against owner as the router parsed it.
func strip(st *xmlstream.Element, owner jid.JID) {
	// A new slice when one goes: a room's copies share their children
	// (xmlstream.Element.CopyShared).
	st.Nodes = st.NodesWithout(func(c *xmlstream.Element) bool { return forged(c, owner) })
}

// forged reports whether c is a stanza-id by owner's bare JID.
func forged(c *xmlstream.Element, owner jid.JID) bool {
	if c.Space != NSSID || c.Local != "stanza-id" {
		return false
	}
	by := c.Attr("by")
	p := lastBy.Load()
	if p == nil || p.by != by {
		j, err := jid.Parse(by)
		p = &parsedBy{by: by, bare: j.Bare(), ok: err == nil}
		lastBy.Store(p)
	}
	if !p.ok {
		return strings.EqualFold(by, owner.Bare().String())
	}
	return p.bare == owner.Bare()
}

// lastBy is the last stanza-id 'by' forged parsed: in a room's fan-out every
// copy carries the same one (the room's), so it is parsed once per message,
// not once per occupant.
var lastBy atomic.Pointer[parsedBy]

type parsedBy struct {
	by   string
	bare jid.JID
	ok   bool // by parsed
}

// streamHead lets the stream decoder parse one stored message.
const streamHead = "<stream:stream xmlns='" + xmlstream.NSClient + "' xmlns:stream='" + xmlstream.NSStream + "'>"

// decodeMessage parses a stored message (XML as sent on a jabber:client stream).
// The decoders are pooled: a new one per message (its 4 KiB buffer and state)
// was a third of what a query of a page of 50 allocated, and the collections
// that allocation caused delayed the queries that ran into them.
//
// A pooled decoder reads streamHead once: later messages are read as if they
// followed it (xmlstream.Decoder.ResetElements), which spares a header parse
// per message (~15% of a with= query's CPU in BenchmarkQuery100k).
func decodeMessage(raw []byte) (*xmlstream.Element, error) {
	md := msgDecoders.Get().(*msgDecoder)
	var err error
	if md.primed {
		md.r = storedReader{raw: raw, off: len(streamHead)}
		md.d.ResetElements(&md.r)
	} else {
		md.r = storedReader{raw: raw}
		md.d.Reset(&md.r)
		_, err = md.d.StreamHeader()
		md.primed = err == nil
	}
	var el *xmlstream.Element
	if err == nil {
		el, err = md.d.Next()
	}
	md.r = storedReader{}
	msgDecoders.Put(md)
	return el, err
}

// msgDecoder is a decoder and its input, reused by decodeMessage (the elements
// it returns share nothing with it).
type msgDecoder struct {
	d      *xmlstream.Decoder
	r      storedReader
	primed bool // d has read streamHead
}

var msgDecoders = sync.Pool{New: func() any {
	md := &msgDecoder{}
	md.d = xmlstream.NewDecoder(&md.r, xmlstream.DefaultLimits())
	return md
}}

// storedReader reads streamHead, then raw.
type storedReader struct {
	off int // bytes of streamHead+raw read
	raw []byte
}

func (r *storedReader) Read(p []byte) (int, error) {
	if r.off < len(streamHead) {
		n := copy(p, streamHead[r.off:])
		r.off += n
		return n, nil
	}
	rest := r.raw[min(len(r.raw), r.off-len(streamHead)):]
	if len(rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, rest)
	r.off += n
	return n, nil
}

// peek returns the direction and peer of a stored value without decoding it.
func peek(v []byte) (dir byte, with string, rest []byte, ok bool) {
	if len(v) < 2 {
		return 0, "", nil, false
	}
	i := strings.IndexByte(string(v[1:]), 0)
	if i < 0 {
		return 0, "", nil, false
	}
	return v[0], string(v[1 : 1+i]), v[2+i:], true
}

// Append archives msg (encoded before Append returns) for owner (a bare JID string: a
// user or a room) under a fresh id, which it returns; the write is asynchronous
// as described in the package doc.
func (m *Module) Append(owner string, dir byte, with string, msg *xmlstream.Element) string {
	m.idMu.Lock()
	defer m.idMu.Unlock()
	id := m.newID(m.now())
	m.enqueue(owner, id, dir, with, msg)
	return id
}

// enqueue encodes and queues a record; called with idMu held.
func (m *Module) enqueue(owner, id string, dir byte, with string, msg *xmlstream.Element) {
	r := record{owner: owner, rec: rec{id: id, dir: dir, with: with,
		body: xmlstream.AppendElement(make([]byte, 0, 256), msg, xmlstream.NSClient)}}
	select {
	case m.q <- r:
		m.queued.Add(1)
	default:
		m.drop(1, errors.New("archive queue full"))
	}
}

func (m *Module) drop(n int, err error) {
	m.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	if last := m.lastLog.Load(); now-last > int64(10*time.Second) && m.lastLog.CompareAndSwap(last, now) {
		m.h.Logger().Warn("messages not archived", "count", n, "dropped_total", m.dropped.Load(), "err", err)
	}
}

// appender writes queued records in batches until Stop, then drains the queue.
func (m *Module) appender() {
	defer close(m.done)
	batch := make([]record, 0, MaxBatch)
	var last time.Time
	for {
		var r record
		select {
		case r = <-m.q:
		case <-m.stop:
			for {
				batch = batch[:0]
				for len(batch) < MaxBatch {
					select {
					case r := <-m.q:
						batch = append(batch, r)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				m.write(batch)
			}
		}
		batch = append(batch[:0], r)
		// Group commit window: at most one commit per CommitInterval while
		// the queue is short, unless a query waits for it (Sync kicks).
		if wait := time.Until(last.Add(CommitInterval)); wait > 0 && len(m.q) < MaxBatch {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-m.kick:
			case <-m.stop:
			}
			t.Stop()
		}
	fill:
		for len(batch) < MaxBatch {
			select {
			case r := <-m.q:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		m.write(batch)
		last = time.Now()
	}
}

// chunkOps turns a batch into puts: one chunk per owner (more if an owner's
// records exceed maxChunkBytes), records in id order, each with its rows of the
// peer index.
func chunkOps(batch []record) []storage.Op {
	byOwner := map[string][]rec{}
	var owners []string
	for _, r := range batch {
		if _, ok := byOwner[r.owner]; !ok {
			owners = append(owners, r.owner)
		}
		byOwner[r.owner] = append(byOwner[r.owner], r.rec)
	}
	ops := make([]storage.Op, 0, len(owners))
	for _, o := range owners {
		rs := byOwner[o]
		slices.SortStableFunc(rs, func(a, b rec) int { return strings.Compare(a.id, b.id) })
		for len(rs) > 0 {
			n, size := 0, 0
			for n < len(rs) && (n == 0 || size+len(rs[n].body) <= maxChunkBytes) {
				size += len(rs[n].body) + len(rs[n].with)
				n++
			}
			ops = append(ops, chunkPut(o, rs[:n])...)
			rs = rs[n:]
		}
	}
	return ops
}

// chunkPut returns the put of one chunk (records sorted by id) and of its index
// rows.
func chunkPut(owner string, rs []rec) []storage.Op {
	var peers []string
	var counts []int
	for _, r := range rs {
		if j := slices.Index(peers, r.with); j >= 0 {
			counts[j]++
		} else {
			peers, counts = append(peers, r.with), append(counts, 1)
		}
	}
	ops := []storage.Op{storage.Put(Table, modutil.Key(owner, rs[0].id), encodeChunk(rs))}
	return append(ops, indexOps(owner, rs[0].id, rs[len(rs)-1].id, peers, counts)...)
}

// write commits one batch (retrying a few times while the store is unavailable),
// then trims archives over their cap.
func (m *Module) write(batch []record) {
	ctx := context.Background()
	extra, fresh := m.ensureIndexed(ctx, batch)
	ops := append(chunkOps(batch), extra...)
	var err error
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 1600 * time.Millisecond}
	for try := 0; try < 5; try++ {
		if err = m.st.Apply(ctx, ops...); err == nil || !errors.Is(err, storage.ErrUnavailable) {
			break
		}
		select {
		case <-time.After(retry.Next()):
		case <-m.stop:
			try = 5
		}
	}
	if err != nil {
		m.drop(len(batch), err)
	} else {
		m.rememberIndexed(fresh)
		m.trim(ctx, batch)
	}
	m.mu.Lock()
	m.settled += uint64(len(batch))
	m.cond.Broadcast()
	m.mu.Unlock()
}

// limit is the current per-archive cap (< 0: none).
func (m *Module) limit() int {
	max := m.opt.Max
	if v := m.maxOverride.Load(); v != 0 {
		max = int(v)
	}
	ramMax := m.opt.RAMMax
	if v := m.ramMaxOverride.Load(); v != 0 {
		ramMax = int(v)
	}
	switch m.st.Status().Mode {
	case "ram-only", "degraded-ram":
		if ramMax >= 0 && (max < 0 || ramMax < max) {
			return ramMax
		}
	}
	return max
}

// SetLimits sets the per-archive caps at run time (as Options.Max and
// Options.RAMMax; 0 leaves one unchanged, < 0 means unlimited).
func (m *Module) SetLimits(max, ramMax int) {
	m.maxOverride.Store(int64(max))
	m.ramMaxOverride.Store(int64(ramMax))
}

// archiveLen counts owner's archived messages from the chunk headers.
func (m *Module) archiveLen(owner string) int {
	prefix := modutil.UserPrefix(owner)
	n := 0
	_ = m.tab.Scan(prefix, func(k string, v []byte) bool {
		if c, err := parseChunk(k[len(prefix):], v); err == nil {
			n += c.n
		}
		return true
	})
	return n
}

// trimOps returns the ops dropping owner's oldest over messages: whole chunks,
// and the oldest chunk left rewritten without its first records.
func (m *Module) trimOps(owner string, over int) []storage.Op {
	prefix := modutil.UserPrefix(owner)
	var ops []storage.Op
	_ = m.tab.Scan(prefix, func(k string, v []byte) bool {
		c, err := parseChunk(k[len(prefix):], v)
		if err != nil {
			ops = append(ops, storage.Delete(Table, k)) // unreadable: drop it
			return true
		}
		ops = append(ops, storage.Delete(Table, k))
		ops = append(ops, indexDeletes(owner, &c)...)
		if c.n <= over {
			over -= c.n
			return over > 0
		}
		var keep []rec
		_ = c.records(func(i int, r chunkRec) bool {
			if i >= over {
				keep = append(keep, rec{id: r.id, dir: r.dir, with: c.peers[r.peer], body: append([]byte(nil), r.body...)})
			}
			return true
		})
		if len(keep) > 0 {
			ops = append(ops, chunkPut(owner, keep)...)
		}
		over = 0
		return false
	})
	return ops
}

// trim drops the oldest messages of the batch's owners that are over the cap,
// down to 90 % of it (so at most every cap/10 messages per archive). The
// per-owner count is cached (the first touch counts the archive); other nodes'
// writes make it an underestimate, corrected by recounting before a trim.
func (m *Module) trim(ctx context.Context, batch []record) {
	max := m.limit()
	if max < 0 {
		return
	}
	added := map[string]int{}
	for _, r := range batch {
		added[r.owner]++
	}
	var ops []storage.Op
	m.mu.Lock() // counts is shared with userRemoved
	for owner, n := range added {
		c, ok := m.counts[owner]
		if !ok {
			c = m.archiveLen(owner)
		} else {
			c += n
		}
		if c > max {
			// Down to 90 % of the cap: a chunk cut into is rewritten once per
			// tenth of the cap, not on every batch.
			c = m.archiveLen(owner)
			if over := c - max; over > 0 {
				over += max / 10
				ops = append(ops, m.trimOps(owner, over)...)
				c -= over
			}
		}
		m.counts[owner] = c
		if len(m.counts) > 100000 {
			clear(m.counts)
		}
	}
	m.mu.Unlock()
	if len(ops) > 0 {
		if err := m.st.Apply(ctx, ops...); err != nil {
			m.h.Logger().Warn("mam: trimming archives", "err", err)
			m.mu.Lock()
			clear(m.counts)
			m.mu.Unlock()
		}
	}
}

// Sync waits until every record queued before the call is written or given up,
// or until ctx ends.
func (m *Module) Sync(ctx context.Context) error {
	target := m.queued.Load()
	select {
	case m.kick <- struct{}{}:
	default:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settled >= target {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	for m.settled < target {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.cond.Wait()
	}
	return nil
}

func (m *Module) userRemoved(ctx context.Context, h module.Host, ev *module.EventData) bool {
	u := modutil.RemovedUser(h, ev.User)
	if u == "" {
		return false
	}
	owner := module.UserJID(h, u).String()
	_ = m.Sync(ctx)
	if err := m.st.Apply(ctx, storage.DeletePrefix(Table, modutil.UserPrefix(owner)), storage.DeletePrefix(WithTable, modutil.UserPrefix(owner)),
		storage.Delete(PrefsTable, owner)); err != nil {
		h.Logger().Error("mam: purging removed user's archive", "user", u, "err", err)
	}
	m.mu.Lock()
	delete(m.counts, owner)
	delete(m.seenIndexed, owner)
	m.mu.Unlock()
	return false
}

// Prefs are an archive's preferences (XEP-0313 §6).
type Prefs struct {
	Default string   `json:"d"`
	Always  []string `json:"a,omitempty"`
	Never   []string `json:"n,omitempty"`
}

// GetPrefs returns owner's preferences (the configured default if none stored).
func (m *Module) GetPrefs(owner string) Prefs {
	b, ok, err := m.pref.Get(owner)
	var p Prefs
	if err == nil && ok && json.Unmarshal(b, &p) == nil && p.Default != "" {
		return p
	}
	return Prefs{Default: m.opt.Default}
}

// wants applies owner's preferences to a message with peer.
func (m *Module) wants(user, owner string, peer jid.JID) bool {
	b, ok, err := m.pref.Get(owner)
	if err != nil || !ok {
		return m.byDefault(m.opt.Default, user, peer)
	}
	var p Prefs
	if json.Unmarshal(b, &p) != nil {
		return true
	}
	bare := peer.Bare().String()
	for _, j := range p.Never {
		if j == bare || j == peer.String() {
			return false
		}
	}
	for _, j := range p.Always {
		if j == bare || j == peer.String() {
			return true
		}
	}
	return m.byDefault(p.Default, user, peer)
}

func (m *Module) byDefault(def, user string, peer jid.JID) bool {
	switch def {
	case "never":
		return false
	case "roster":
		return m.opt.InRoster != nil && m.opt.InRoster(user, peer.Bare().String())
	}
	return true
}
