package mam

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
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
func (m *Module) Query(ctx context.Context, owner string, q Query) (Page, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = m.Sync(sctx)
	cancel()
	max := q.Max
	switch {
	case q.MaxZero:
		max = 0
	case max <= 0:
		max = DefaultPageSize
	case max > MaxPageSize:
		max = MaxPageSize
	}
	prefix := modutil.UserPrefix(owner)
	for _, id := range []string{q.After, q.Before} {
		if id == "" {
			continue
		}
		if _, ok, err := m.tab.Get(prefix + id); err != nil {
			return Page{}, err
		} else if !ok {
			return Page{}, ErrItemNotFound
		}
	}
	var with jid.JID
	if q.With != "" {
		var err error
		if with, err = jid.Parse(q.With); err != nil {
			return Page{}, err
		}
	}
	backward := q.BeforeSet
	type hit struct {
		id    string
		value []byte
	}
	var (
		page       Page
		hits       []hit // forward: the page; backward: a ring of the last max
		ring       int
		beforeIdx  int // backward: matches before the window
		afterCount int // matches beyond the page (forward) or before it (backward)
	)
	err := m.tab.Scan(prefix, func(k string, v []byte) bool {
		id := k[len(prefix):]
		if !q.Start.IsZero() || !q.End.IsZero() {
			t := idTime(id)
			if !q.Start.IsZero() && t.Before(q.Start) {
				return true
			}
			if !q.End.IsZero() && t.After(q.End) {
				return false // keys sort by time
			}
		}
		if q.With != "" {
			_, w, _, ok := peek(v)
			if !ok || !withMatches(with, w) {
				return true
			}
		}
		page.Count++
		if !backward {
			switch {
			case q.After != "" && id <= q.After:
				page.Index = page.Count
			case len(hits) < max:
				hits = append(hits, hit{id, append([]byte(nil), v...)})
			default:
				afterCount++
			}
			return true
		}
		if q.Before != "" && id >= q.Before {
			return true
		}
		if max == 0 {
			beforeIdx++
			return true
		}
		if len(hits) < max {
			hits = append(hits, hit{id, append([]byte(nil), v...)})
		} else {
			hits[ring] = hit{id, append([]byte(nil), v...)}
			ring = (ring + 1) % max
			beforeIdx++
		}
		return true
	})
	if err != nil {
		return Page{}, err
	}
	if backward {
		hits = append(hits[ring:], hits[:ring]...)
		page.Index = beforeIdx
		page.Complete = beforeIdx == 0
	} else {
		page.Complete = afterCount == 0
	}
	for _, h := range hits {
		dir, w, raw, ok := peek(h.value)
		if !ok {
			continue
		}
		msg, err := decodeMessage(raw)
		if err != nil {
			continue
		}
		page.Items = append(page.Items, Item{ID: h.id, Time: idTime(h.id), Dir: dir, With: w, Msg: msg})
	}
	return page, nil
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
	if !modutil.IsOwn(iq) || iq.From.Local == "" || iq.From.Domain != h.Domain() {
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
