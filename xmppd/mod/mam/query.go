package mam

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Query selects archived messages (XEP-0313 §4 filters, XEP-0059 paging).
type Query struct {
	// With keeps messages with this peer: a bare JID matches every resource of
	// it, a full JID only that resource ("" = any peer).
	With string
	// Start and End bound the archive time, inclusive (zero = unbounded).
	Start, End time.Time
	// After returns the page following this id; Before (with BeforeSet) the page
	// preceding it, an empty Before the last page.
	After     string
	Before    string
	BeforeSet bool
	// Max is the page size (0: DefaultPageSize; capped at MaxPageSize). A Max
	// given as 0 by a client (count only) is MaxZero.
	Max     int
	MaxZero bool
}

// Page is a query's answer.
type Page struct {
	Items []Item
	// Index is the position of Items[0] among all matches; Count their number.
	Index, Count int
	// Complete: the page reaches the end of the results in its paging direction.
	Complete bool
}

// ErrItemNotFound: After or Before names an id not in the archive.
var ErrItemNotFound = errors.New("mam: no such archive id")

// Query answers q on owner's archive. It first waits (up to 2 s) for the records
// this node queued before the call.
//
// It reads the archive's chunks in key order twice: the first pass counts the
// matches from the chunk headers (walking records only in chunks a time bound or
// an RSM id falls into), the second decodes the page's records, skipping whole
// chunks before it. A query therefore costs one header per chunk plus the page,
// not a decode of the archive. Chunks written by different nodes may overlap in
// id range; the first pass notices and the query then sorts every match's id
// (the slow path, still without decoding messages).
func (m *Module) Query(ctx context.Context, owner string, q Query) (Page, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = m.Sync(sctx)
	cancel()
	size := q.Max
	switch {
	case q.MaxZero:
		size = 0
	case size <= 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	var with jid.JID
	if q.With != "" {
		var err error
		if with, err = jid.Parse(q.With); err != nil {
			return Page{}, err
		}
	}
	s := &scan{m: m, prefix: modutil.UserPrefix(owner), q: q, with: with, match: map[string]bool{}}
	if q.With != "" && m.indexed(owner) {
		s.ixPrefix = indexPrefix(owner, with.Bare().String())
	}
	if err := s.count(); err != nil {
		return Page{}, err
	}
	if s.ixPrefix != "" && !(s.unordered || s.stale || (q.After != "" && !s.afterFound) || (q.Before != "" && !s.beforeFound)) {
		m.indexAnswered.Add(1)
	} else if s.ixPrefix != "" {
		// What the peer's index rows cannot answer: chunks of two nodes
		// overlapping in id range, an RSM id in a chunk without this peer (or
		// in none), a row whose chunk is gone. The archive's chunks answer.
		s = &scan{m: m, prefix: s.prefix, q: q, with: with, match: s.match}
		if err := s.count(); err != nil {
			return Page{}, err
		}
	}
	if (q.After != "" && !s.afterFound) || (q.Before != "" && !s.beforeFound) {
		return Page{}, ErrItemNotFound
	}
	page := Page{Count: s.total}
	var lo, hi int
	if q.BeforeSet {
		hi = s.total
		if q.Before != "" {
			hi = s.posBefore
		}
		lo = max(0, hi-size)
		page.Complete = lo == 0
	} else {
		lo = 0
		if q.After != "" {
			lo = s.posAfter
		}
		hi = min(s.total, lo+size)
		page.Complete = hi >= s.total
	}
	page.Index = lo
	if hi > lo {
		items, err := s.page(lo, hi)
		if err != nil {
			return Page{}, err
		}
		page.Items = items
	}
	return page, nil
}

// scan is one query's walk over an archive.
type scan struct {
	m      *Module
	prefix string
	q      Query
	with   jid.JID
	match  map[string]bool // peer -> matches the with filter

	total                   int
	posAfter, posBefore     int // matches with id <= After, with id < Before
	afterFound, beforeFound bool
	unordered               bool
	refs                    []ref // slow path: every match, sorted by id
	// ixPrefix: the pass reads the peer index rows with this prefix (with=
	// queries on an indexed archive); stale: an index row's chunk is gone.
	ixPrefix string
	stale    bool
	cur      span
	// The chunk being looked at (reused: the chunks are read one at a time)
	// and the peers' JIDs its headers named (interned once per query).
	chunk chunk
	names map[string]string
}

// parse reads the header of the chunk at key suffix first into s.chunk.
func (s *scan) parse(first string, v []byte) (*chunk, error) {
	if s.names == nil {
		s.names = make(map[string]string, 16)
	}
	return &s.chunk, s.chunk.parse(first, v, s.names)
}

type ref struct {
	id  string
	key string
	idx int
}

func (s *scan) peerMatches(p string) bool {
	if s.q.With == "" {
		return true
	}
	ok, seen := s.match[p]
	if !seen {
		ok = withMatches(s.with, p)
		s.match[p] = ok
	}
	return ok
}

// inTime reports whether an id is within the query's time bounds.
func (s *scan) inTime(id string) bool {
	if s.q.Start.IsZero() && s.q.End.IsZero() {
		return true
	}
	t := idTime(id)
	return !(!s.q.Start.IsZero() && t.Before(s.q.Start)) && !(!s.q.End.IsZero() && t.After(s.q.End))
}

// whole reports whether every record of a chunk spanning first..last is within
// the time bounds (then the chunk's count of matches answers), and none whether
// none is.
func (s *scan) whole(first, last string) (all, none bool) {
	if s.q.Start.IsZero() && s.q.End.IsZero() {
		return true, false
	}
	if (!s.q.Start.IsZero() && idTime(last).Before(s.q.Start)) || (!s.q.End.IsZero() && idTime(first).After(s.q.End)) {
		return false, true
	}
	return s.inTime(first) && s.inTime(last), false
}

// beyondEnd reports whether sp starts after the query's end: rows are read in
// first-id order, so no later one has a match either.
func (s *scan) beyondEnd(sp *span) bool {
	return !s.q.End.IsZero() && idTime(sp.first).After(s.q.End)
}

// headerMatches is the number of c's records matching the peer filter.
func (s *scan) headerMatches(c *chunk) int {
	if s.q.With == "" {
		return c.n
	}
	n := 0
	for i, p := range c.peers {
		if s.peerMatches(p) {
			n += c.counts[i]
		}
	}
	return n
}

func (s *scan) recMatches(c *chunk, r chunkRec) bool {
	return s.inTime(r.id) && s.peerMatches(c.peers[r.peer])
}

// span is one chunk as a pass sees it: its id range, the matches of the peer
// filter in it (n < 0: unknown until its header is read) and the chunk itself
// once read.
type span struct {
	key         string // in Table
	first, last string
	n           int
	c           *chunk
}

// touches reports whether an RSM id may lie in sp.
func touches(sp *span, id string) bool { return id != "" && sp.first <= id && id <= sp.last }

// spans calls fn for each chunk the query may need, in key order: from the peer
// index, the chunks with the with= peer's bare JID (counts from the index rows
// for a bare JID filter, from the chunk headers for a full JID); otherwise every
// chunk of the archive, header read.
func (s *scan) spans(fn func(sp *span) bool) error {
	if s.ixPrefix != "" {
		full := s.with.Resource != ""
		return s.m.with.Scan(s.ixPrefix, func(k string, v []byte) bool {
			r, ok := parseIndexRow(k[len(s.ixPrefix):], v)
			if !ok {
				s.stale = true
				return false
			}
			sp := &s.cur                                     // reused: a span per row would be an allocation
			*sp = span{first: r.first, last: r.last, n: r.n} // key: made by load
			if full {
				sp.n = -1
			}
			return fn(sp)
		})
	}
	return s.m.tab.Scan(s.prefix, func(k string, v []byte) bool {
		c, err := s.parse(k[len(s.prefix):], v)
		if err != nil {
			return true // skipped by every pass
		}
		sp := &s.cur // reused, as the chunk is
		*sp = span{key: k, first: c.first, last: c.last, c: c}
		sp.n = s.headerMatches(c)
		return fn(sp)
	})
}

// load reads sp's chunk; false if it is gone or unreadable (an index row whose
// chunk was deleted since: the index path then gives up, see Query).
func (s *scan) load(sp *span) (bool, error) {
	if sp.c != nil {
		return true, nil
	}
	if sp.key == "" {
		sp.key = s.prefix + sp.first
	}
	// The chunk is read, not changed, and kept only for this query: no copy
	// (a chunk is ~50 KB, a third of what a with= query allocated).
	v, ok, err := storage.GetShared(s.m.tab, sp.key)
	if err != nil {
		return false, err
	}
	if !ok {
		s.stale = true
		return false, nil
	}
	c, err := s.parse(sp.key[len(s.prefix):], v)
	if err != nil {
		s.stale = true
		return false, nil
	}
	sp.c = c
	if sp.n < 0 {
		sp.n = s.headerMatches(c)
	}
	return true, nil
}

// count is the first pass.
func (s *scan) count() error {
	var prevLast string
	var bad error
	err := s.spans(func(sp *span) bool {
		if s.beyondEnd(sp) && (s.q.After == "" || s.afterFound) && (s.q.Before == "" || s.beforeFound) {
			return false // chunks are in first-id order: none after this one matches
		}
		if sp.first < prevLast {
			s.unordered = true
			return false
		}
		prevLast = sp.last
		all, none := s.whole(sp.first, sp.last)
		if !touches(sp, s.q.After) && !touches(sp, s.q.Before) {
			if none {
				return true
			}
			if all {
				if sp.n < 0 {
					if ok, err := s.load(sp); !ok {
						bad = err
						return false
					}
				}
				n := sp.n
				s.total += n
				if s.q.After != "" && sp.last <= s.q.After {
					s.posAfter += n
				}
				if s.q.Before != "" && sp.last < s.q.Before {
					s.posBefore += n
				}
				return true
			}
		}
		if ok, err := s.load(sp); !ok {
			bad = err
			return false
		}
		c := sp.c
		if err := c.records(func(_ int, r chunkRec) bool {
			if r.id == s.q.After {
				s.afterFound = true
			}
			if r.id == s.q.Before {
				s.beforeFound = true
			}
			if !s.recMatches(c, r) {
				return true
			}
			s.total++
			if s.q.After != "" && r.id <= s.q.After {
				s.posAfter++
			}
			if s.q.Before != "" && r.id < s.q.Before {
				s.posBefore++
			}
			return true
		}); err != nil {
			bad = err
		}
		return true
	})
	if err == nil {
		err = bad
	}
	if err != nil || !s.unordered || s.ixPrefix != "" {
		return err // an unordered index path is redone without the index
	}
	return s.sorted()
}

// sorted is the slow path: every match's id, sorted.
func (s *scan) sorted() error {
	*s = scan{m: s.m, prefix: s.prefix, q: s.q, with: s.with, match: s.match, unordered: true}
	err := s.m.tab.Scan(s.prefix, func(k string, v []byte) bool {
		c, err := parseChunk(k[len(s.prefix):], v)
		if err != nil {
			return true
		}
		_ = c.records(func(i int, r chunkRec) bool {
			if r.id == s.q.After {
				s.afterFound = true
			}
			if r.id == s.q.Before {
				s.beforeFound = true
			}
			if s.recMatches(&c, r) {
				s.refs = append(s.refs, ref{id: r.id, key: k, idx: i})
			}
			return true
		})
		return true
	})
	if err != nil {
		return err
	}
	slices.SortFunc(s.refs, func(a, b ref) int { return strings.Compare(a.id, b.id) })
	s.total = len(s.refs)
	if s.q.After != "" {
		s.posAfter, _ = slices.BinarySearchFunc(s.refs, s.q.After, func(r ref, id string) int {
			if r.id <= id {
				return -1
			}
			return 1
		})
	}
	if s.q.Before != "" {
		s.posBefore, _ = slices.BinarySearchFunc(s.refs, s.q.Before, func(r ref, id string) int { return strings.Compare(r.id, id) })
	}
	return nil
}

// item decodes one record into an Item (nil if the message does not parse).
func item(c *chunk, r chunkRec) (Item, bool) {
	msg, err := decodeMessage(r.body)
	if err != nil {
		return Item{}, false
	}
	return Item{ID: r.id, Time: idTime(r.id), Dir: r.dir, With: c.peers[r.peer], Msg: msg}, true
}

// page is the second pass: the matches at positions [lo, hi).
func (s *scan) page(lo, hi int) ([]Item, error) {
	items := make([]Item, 0, hi-lo)
	if s.unordered {
		for _, rf := range s.refs[lo:min(hi, len(s.refs))] {
			v, ok, err := s.m.tab.Get(rf.key)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			c, err := parseChunk(rf.key[len(s.prefix):], v)
			if err != nil {
				continue
			}
			_ = c.records(func(i int, r chunkRec) bool {
				if i < rf.idx {
					return true
				}
				if it, ok := item(&c, r); ok {
					items = append(items, it)
				}
				return false
			})
		}
		return items, nil
	}
	pos := 0
	var bad error
	err := s.spans(func(sp *span) bool {
		if s.beyondEnd(sp) {
			return false
		}
		all, none := s.whole(sp.first, sp.last)
		if none {
			return true
		}
		if all {
			if sp.n < 0 {
				if ok, err := s.load(sp); !ok {
					bad = err
					return err == nil
				}
			}
			if pos+sp.n <= lo {
				pos += sp.n
				return true
			}
		}
		if ok, err := s.load(sp); !ok {
			bad = err
			return err == nil // gone since the first pass: skipped
		}
		c := sp.c
		_ = c.records(func(_ int, r chunkRec) bool {
			if !s.recMatches(c, r) {
				return true
			}
			if pos >= lo && pos < hi {
				if it, ok := item(c, r); ok {
					items = append(items, it)
				}
			}
			pos++
			return pos < hi
		})
		return pos < hi
	})
	if err == nil {
		err = bad
	}
	return items, err
}

func withMatches(filter jid.JID, stored string) bool {
	s, err := jid.Parse(stored)
	if err != nil {
		return false
	}
	if filter.Resource != "" {
		return s == filter
	}
	return s.Bare() == filter.Bare()
}

// iq handles urn:xmpp:mam:2 IQs: query (get: the form; set: run it) and prefs.
func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	p := iq.Payload()
	typ := iq.Stanza.Attr("type")
	if !modutil.IsOwn(iq) || iq.From.Local == "" || !module.IsLocal(h, iq.From.Domain) {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "forbidden", "")
		return
	}
	owner := iq.From.Bare().String()
	switch {
	case p.Local == "query" && typ == "get":
		modutil.ReplyResult(ctx, h, iq, queryForm())
	case p.Local == "query" && typ == "set":
		m.query(ctx, h, iq, owner, p)
	case p.Local == "prefs" && typ == "get":
		modutil.ReplyResult(ctx, h, iq, prefsElement(m.GetPrefs(owner)))
	case p.Local == "prefs" && typ == "set":
		pr, ok := parsePrefs(p)
		if !ok {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "default must be always, never or roster")
			return
		}
		b, _ := json.Marshal(pr)
		if err := h.Store().Apply(ctx, storage.Put(PrefsTable, owner, b)); err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "mam prefs", err)
			return
		}
		modutil.ReplyResult(ctx, h, iq, prefsElement(pr))
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "feature-not-implemented", "")
	}
}

func queryForm() *xmlstream.Element {
	x := xmlstream.New(NSData, "x", "type", "form")
	x.Append(xmlstream.New(NSData, "field", "var", "FORM_TYPE", "type", "hidden").
		Append(xmlstream.New(NSData, "value").AppendText(NS)))
	for _, f := range [][2]string{{"with", "jid-single"}, {"start", "text-single"}, {"end", "text-single"}} {
		x.Append(xmlstream.New(NSData, "field", "var", f[0], "type", f[1]))
	}
	return xmlstream.New(NS, "query").Append(x)
}

func parseTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// parseQuery reads the data form and RSM set of a query element.
func parseQuery(p *xmlstream.Element) (Query, string) {
	var q Query
	if x := p.Child(NSData, "x"); x != nil {
		for _, f := range x.Children() {
			if f.Local != "field" {
				continue
			}
			v := f.ChildText("", "value")
			switch f.Attr("var") {
			case "FORM_TYPE":
				if v != NS {
					return q, "FORM_TYPE must be " + NS
				}
			case "with":
				if _, err := jid.Parse(v); err != nil || v == "" {
					return q, "malformed 'with'"
				}
				q.With = v
			case "start", "end":
				t, ok := parseTime(v)
				if !ok {
					return q, "malformed '" + f.Attr("var") + "'"
				}
				if f.Attr("var") == "start" {
					q.Start = t
				} else {
					q.End = t
				}
			default:
				return q, "unsupported field '" + f.Attr("var") + "'"
			}
		}
	}
	if set := p.Child(NSRSM, "set"); set != nil {
		if c := set.Child(NSRSM, "max"); c != nil {
			n, err := strconv.Atoi(c.Text())
			if err != nil || n < 0 {
				return q, "malformed 'max'"
			}
			q.Max, q.MaxZero = n, n == 0
		}
		if c := set.Child(NSRSM, "after"); c != nil {
			q.After = c.Text()
		}
		if c := set.Child(NSRSM, "before"); c != nil {
			q.Before, q.BeforeSet = c.Text(), true
		}
		if set.Child(NSRSM, "index") != nil {
			return q, "RSM index is not supported"
		}
	}
	return q, ""
}

func (m *Module) query(ctx context.Context, h module.Host, iq *module.IQ, owner string, p *xmlstream.Element) {
	q, bad := parseQuery(p)
	if bad != "" {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", bad)
		return
	}
	page, err := m.Query(ctx, owner, q)
	switch {
	case errors.Is(err, ErrItemNotFound):
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "")
		return
	case err != nil:
		h.Logger().Warn("mam query failed", "owner", owner, "err", err)
		modutil.ReplyError(ctx, h, iq, module.ErrWait, "internal-server-error", "")
		return
	}
	queryID := p.Attr("queryid")
	to := iq.From.String()
	for _, it := range page.Items {
		r := xmlstream.New(NS, "result", "id", it.ID)
		if queryID != "" {
			r.SetAttr("queryid", queryID)
		}
		r.Append(xmlstream.New(NSForward, "forwarded").Append(
			xmlstream.New(NSDelay, "delay", "stamp", it.Time.UTC().Format("2006-01-02T15:04:05.000000Z")),
			it.Msg))
		msg := xmlstream.New(xmlstream.NSClient, "message", "to", to, "from", owner, "id", it.ID)
		msg.Append(r)
		if iq.Session != nil {
			iq.Session.Send(msg)
		} else {
			h.Route(ctx, msg)
		}
	}
	fin := xmlstream.New(NS, "fin")
	if page.Complete {
		fin.SetAttr("complete", "true")
	}
	set := xmlstream.New(NSRSM, "set")
	if len(page.Items) > 0 {
		set.Append(xmlstream.New(NSRSM, "first", "index", strconv.Itoa(page.Index)).AppendText(page.Items[0].ID),
			xmlstream.New(NSRSM, "last").AppendText(page.Items[len(page.Items)-1].ID))
	}
	set.Append(xmlstream.New(NSRSM, "count").AppendText(strconv.Itoa(page.Count)))
	fin.Append(set)
	r := module.Result(iq.Stanza, fin)
	if iq.Session == nil {
		modutil.Reply(ctx, h, iq, r)
		return
	}
	if r.Attr("from") == "" {
		r.SetAttr("from", owner)
	}
	r.SetAttr("to", to)
	iq.Session.Send(r) // after the results, on the same queue
}

func parsePrefs(p *xmlstream.Element) (Prefs, bool) {
	pr := Prefs{Default: p.Attr("default")}
	switch pr.Default {
	case "always", "never", "roster":
	default:
		return pr, false
	}
	list := func(name string) []string {
		var out []string
		if c := p.Child(NS, name); c != nil {
			for _, j := range c.Children() {
				if j.Local != "jid" {
					continue
				}
				if pj, err := jid.Parse(j.Text()); err == nil {
					out = append(out, pj.String())
				}
			}
		}
		return out
	}
	pr.Always, pr.Never = list("always"), list("never")
	return pr, true
}

func prefsElement(p Prefs) *xmlstream.Element {
	e := xmlstream.New(NS, "prefs", "default", p.Default)
	for _, l := range []struct {
		name string
		jids []string
	}{{"always", p.Always}, {"never", p.Never}} {
		c := xmlstream.New(NS, l.name)
		for _, j := range l.jids {
			c.Append(xmlstream.New(NS, "jid").AppendText(j))
		}
		e.Append(c)
	}
	return e
}
