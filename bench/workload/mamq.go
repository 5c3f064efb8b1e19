package workload

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MAMResult is the archive query measurement.
type MAMResult struct {
	Archive    int     `json:"archive_messages"`
	Peers      int     `json:"peers"`
	FillSecs   float64 `json:"fill_seconds"`
	FillPerSec float64 `json:"fill_messages_per_second"`
	// Direct: the archive was written to the server's storage (Target.WriteArchive), not sent.
	Direct bool `json:"written_to_storage"`
	Page   int  `json:"page"`
	// All: the last page (RSM <before/>) of the whole archive; With: the last
	// page of the messages with one peer (a with= filter).
	All  MAMQueries `json:"all"`
	With MAMQueries `json:"with"`
}

// MAMQueries is one kind of query, repeated.
type MAMQueries struct {
	Queries int     `json:"queries"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	Count   int     `json:"rsm_count"` // the <count/> the server answered (0: none)
}

const nsMAM = "urn:xmpp:mam:2"

// MAMQuery turns archiving on for one user (prefix0; XEP-0313 preferences,
// default always) and fills its archive with n messages it sends, round
// robin, to peers other users (prefix1..), keeping window messages in flight
// (each delivery lets the next one go), then times queries for a page of page
// messages: the archive's last page (RSM max=page and an empty <before/>, what a
// client opening a conversation asks first), queries times, and the same with a
// with= filter on one peer. A query's time runs from sending the IQ to its
// result, after the page's messages; every query must return page messages.
// A target that stores archives directly (WriteArchive: ejabberd) gets the same
// messages written to its storage instead of sent.
func MAMQuery(ctx context.Context, t *Target, prefix string, n, peers, window, page, queries int, maxQueryTime time.Duration) (MAMResult, error) {
	r := MAMResult{Archive: n, Peers: peers, Page: page}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	conns, err := loginAll(ctx, t, prefix, peers+1, 0, true)
	if err != nil {
		return r, err
	}
	sess := make([]*session, peers+1)
	defer func() {
		for _, s := range sess {
			if s != nil {
				s.close()
			}
		}
	}()
	var sent, delivered atomic.Int64
	done := make(chan struct{})
	var next func()
	body := make([]byte, 0, 256)
	next = func() {
		i := sent.Add(1)
		if i > int64(n) {
			return
		}
		to := conns[1+int(i)%peers].JID
		body = append(body[:0], "<message type='chat' to='"...)
		body = append(body, to...)
		body = append(body, "'><body>archived message "...)
		body = strconv.AppendInt(body, i, 10)
		body = append(body, "</body></message>"...)
		_ = sess[0].send(body)
	}
	// The owner's results arrive as messages: collected per query.
	var results atomic.Int64
	sess[0] = newSession(conns[0], func(el []byte) {
		if bytes.Contains(el, []byte(nsMAM)) {
			results.Add(1)
		}
	}, nil)
	var sendMu sync.Mutex // the peers' readers send the owner's next message in turn
	for p := 1; p <= peers; p++ {
		sess[p] = newSession(conns[p], func(el []byte) {
			if string(attr(el, "type")) != "chat" {
				return
			}
			if d := delivered.Add(1); d == int64(n) {
				close(done)
				return
			}
			sendMu.Lock()
			next()
			sendMu.Unlock()
		}, nil)
	}
	// Archiving on for the owner (ejabberd's and Prosody's benchmark
	// configurations archive nobody by default; xmppd archives everyone).
	id := sess[0].c.NextID()
	if res, err := sess[0].iq(id, []byte("<iq type='set' id='"+id+"'><prefs xmlns='"+nsMAM+"' default='always'/></iq>"), 30*time.Second); err != nil {
		return r, fmt.Errorf("archive preferences: %w", err)
	} else if string(attr(res, "type")) != "result" {
		return r, fmt.Errorf("archive preferences: %.300s", res)
	}
	// One query on the empty archive first: it opens the server's archive
	// storage (Prosody's SQL store creates its tables on first use, and
	// WriteArchive writes into them).
	id = sess[0].c.NextID()
	if res, err := sess[0].iq(id, []byte("<iq type='set' id='"+id+"'><query xmlns='"+nsMAM+"' queryid='"+id+"'/></iq>"), 30*time.Second); err != nil {
		return r, fmt.Errorf("first query: %w", err)
	} else if string(attr(res, "type")) != "result" {
		return r, fmt.Errorf("first query: %.300s", res)
	}
	start := time.Now()
	if t.WriteArchive != nil {
		owner, _ := User(prefix, 0)
		got, err := t.WriteArchive(ctx, owner, peers, n)
		if err != nil {
			return r, err
		}
		if got != n {
			return r, fmt.Errorf("archive written holds %d messages, want %d", got, n)
		}
		r.Direct = true
		close(done)
	} else {
		sendMu.Lock()
		for range window {
			next()
		}
		sendMu.Unlock()
	}
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer fcancel()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			t.Log.Info("filling the archive", "server", t.Name, "delivered", delivered.Load(), "of", n)
		case <-fctx.Done():
			return r, fmt.Errorf("fill: %d of %d messages delivered: %w", delivered.Load(), n, fctx.Err())
		}
	}
	r.FillSecs = time.Since(start).Seconds()
	r.FillPerSec = float64(n) / r.FillSecs
	t.Log.Info("archive filled", "server", t.Name, "messages", n, "took", time.Since(start).Round(time.Millisecond))

	peer, _, _ := bytes.Cut([]byte(conns[1].JID), []byte("/"))
	run := func(with string) (MAMQueries, error) {
		var q MAMQueries
		var lat []time.Duration
		deadline := time.Now().Add(maxQueryTime)
		// i = -1 is a warm-up query, not timed: the same for every server, it
		// lets a server finish what the fill left (xmppd's first query waits
		// for the archive writes still queued, up to 2 s) and warms caches.
		for i := -1; i < queries && (i < 5 || time.Now().Before(deadline)); i++ {
			id := sess[0].c.NextID()
			form := ""
			if with != "" {
				form = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>" + nsMAM +
					"</value></field><field var='with'><value>" + with + "</value></field></x>"
			}
			iq := "<iq type='set' id='" + id + "'><query xmlns='" + nsMAM + "' queryid='" + id + "'>" + form +
				"<set xmlns='http://jabber.org/protocol/rsm'><max>" + strconv.Itoa(page) + "</max><before/></set></query></iq>"
			results.Store(0)
			t0 := time.Now()
			res, err := sess[0].iq(id, []byte(iq), time.Minute)
			el := time.Since(t0)
			if err != nil {
				return q, fmt.Errorf("query %d: %w", i, err)
			}
			if string(attr(res, "type")) != "result" {
				return q, fmt.Errorf("query %d: %.300s", i, res)
			}
			if got := results.Load(); got != int64(page) {
				return q, fmt.Errorf("query %d: %d results, want %d", i, got, page)
			}
			if c := bytes.Index(res, []byte("<count>")); c >= 0 {
				rest := res[c+len("<count>"):]
				if e := bytes.IndexByte(rest, '<'); e > 0 {
					q.Count, _ = strconv.Atoi(string(rest[:e]))
				}
			}
			if i >= 0 {
				lat = append(lat, el)
			}
		}
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		q.Queries = len(lat)
		q.P50Ms = ms(lat[len(lat)/2])
		q.P99Ms = ms(lat[min(len(lat)-1, len(lat)*99/100)])
		q.MaxMs = ms(lat[len(lat)-1])
		return q, nil
	}
	if r.All, err = run(""); err != nil {
		return r, fmt.Errorf("last page: %w", err)
	}
	if r.With, err = run(string(peer)); err != nil {
		return r, fmt.Errorf("last page with %s: %w", peer, err)
	}
	t.Log.Info("mam queries", "server", t.Name, "archive", n,
		"all_p50_ms", fmt.Sprintf("%.2f", r.All.P50Ms), "all_p99_ms", fmt.Sprintf("%.2f", r.All.P99Ms), "all_count", r.All.Count,
		"with_p50_ms", fmt.Sprintf("%.2f", r.With.P50Ms), "with_p99_ms", fmt.Sprintf("%.2f", r.With.P99Ms), "with_count", r.With.Count)
	return r, nil
}
