// Package modutil holds what xmppd's feature modules share: replying to IQs,
// mapping storage errors to stanza errors, a compact codec that stores stanza trees
// in tables, per-user locks and stanza classification helpers.
//
// It must not import the xmppd core or any module.
package modutil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Sep separates the parts of composite table keys ("user\x00contact").
const Sep = "\x00"

// Key joins key parts with Sep.
func Key(parts ...string) string { return strings.Join(parts, Sep) }

// UserPrefix is the key prefix of every row of user in a table keyed "user\x00...".
func UserPrefix(user string) string { return user + Sep }

// LocalUser returns the account name of an EvUserRemoved event (a localpart; a bare
// JID is reduced to its localpart). With virtual hosts use RemovedUser: this
// cannot tell alice@a.example from alice@b.example.
func LocalUser(u string) string {
	if i := strings.IndexByte(u, '@'); i >= 0 {
		return u[:i]
	}
	return u
}

// RemovedUser returns the user key (module.UserKey) of an EvUserRemoved event's
// User: a user key, or a bare JID of a served host.
func RemovedUser(h module.Host, u string) string {
	if u == "" {
		return ""
	}
	return module.UserKey(h, module.UserJID(h, u))
}

// Reply routes r as the answer to iq, making sure it has a from address: an IQ sent
// without 'to' is answered from the sender's bare JID (RFC 6120 §10.3.3).
func Reply(ctx context.Context, h module.Host, iq *module.IQ, r *xmlstream.Element) {
	if r.Attr("from") == "" {
		if !iq.To.IsZero() {
			r.SetAttr("from", iq.To.String())
		} else {
			r.SetAttr("from", iq.From.Bare().String())
		}
	}
	if r.Attr("to") == "" && !iq.From.IsZero() {
		r.SetAttr("to", iq.From.String())
	}
	h.Route(ctx, r)
}

// ReplyResult answers iq with a result carrying payload.
func ReplyResult(ctx context.Context, h module.Host, iq *module.IQ, payload ...*xmlstream.Element) {
	Reply(ctx, h, iq, module.Result(iq.Stanza, payload...))
}

// ReplyError answers iq with a stanza error.
func ReplyError(ctx context.Context, h module.Host, iq *module.IQ, typ, cond, text string) {
	Reply(ctx, h, iq, module.Error(iq.Stanza, typ, cond, text))
}

// ReplyStoreError answers iq after a failed storage write with module.StoreError
// (type wait: resource-constraint when storage is unavailable, internal-server-error
// otherwise) and logs the cause once.
func ReplyStoreError(ctx context.Context, h module.Host, iq *module.IQ, what string, err error) {
	lvl := slog.LevelError
	if errors.Is(err, storage.ErrUnavailable) {
		lvl = slog.LevelWarn
	}
	h.Logger().Log(ctx, lvl, "storage write failed", "op", what, "from", iq.From.String(), "err", err)
	Reply(ctx, h, iq, module.StoreError(iq.Stanza, err))
}

// IsOwn reports whether iq is addressed to the sender's own account (no 'to', or the
// sender's bare JID), as roster, vcard set, private storage and blocking require.
func IsOwn(iq *module.IQ) bool {
	return iq.To.IsZero() || iq.To.Bare() == iq.From.Bare()
}

// IsLocalUser reports whether j is an account JID of one of the host's domains
// (virtual hosts: module.IsLocal).
func IsLocalUser(h module.Host, j jid.JID) bool {
	return j.Local != "" && module.IsLocal(h, j.Domain)
}

// Type returns a stanza's type attribute with RFC defaults applied ("normal" for
// messages, "available" for presence without type).
func Type(st *xmlstream.Element) string {
	t := st.Attr("type")
	if t == "" {
		switch st.Local {
		case "message":
			return "normal"
		case "presence":
			return "available"
		}
	}
	return t
}

// Locks serializes read-modify-write sequences per key (usually per user) on this
// node. A fixed array of mutexes keeps memory bounded.
type Locks struct{ mu [64]sync.Mutex }

// Lock locks key's stripe and returns the unlock function.
func (l *Locks) Lock(key string) func() {
	f := fnv.New32a()
	_, _ = f.Write([]byte(key))
	m := &l.mu[f.Sum32()%uint32(len(l.mu))]
	m.Lock()
	return m.Unlock
}

// encoded is the stored form of an element: compact JSON.
type encoded struct {
	S string     `json:"s,omitempty"`
	L string     `json:"l"`
	A [][]string `json:"a,omitempty"` // [space, local, value]
	C []any      `json:"c,omitempty"` // string (text) or encoded
}

// Encode serializes e for storage.
func Encode(e *xmlstream.Element) []byte {
	b, _ := json.Marshal(toEncoded(e)) // only strings and slices: cannot fail
	return b
}

func toEncoded(e *xmlstream.Element) encoded {
	out := encoded{S: e.Space, L: e.Local}
	for _, a := range e.Attrs {
		out.A = append(out.A, []string{a.Space, a.Local, a.Value})
	}
	for _, n := range e.Nodes {
		switch n := n.(type) {
		case *xmlstream.Element:
			out.C = append(out.C, toEncoded(n))
		case xmlstream.CharData:
			out.C = append(out.C, string(n))
		}
	}
	return out
}

// Decode is the inverse of Encode.
func Decode(b []byte) (*xmlstream.Element, error) {
	var raw json.RawMessage = b
	return decodeRaw(raw, 0)
}

type rawEncoded struct {
	S string            `json:"s"`
	L string            `json:"l"`
	A [][]string        `json:"a"`
	C []json.RawMessage `json:"c"`
}

func decodeRaw(b json.RawMessage, depth int) (*xmlstream.Element, error) {
	if depth > 100 {
		return nil, fmt.Errorf("modutil: stored element nests too deep")
	}
	var r rawEncoded
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("modutil: decode stored element: %w", err)
	}
	e := &xmlstream.Element{Space: r.S, Local: r.L}
	for _, a := range r.A {
		if len(a) != 3 {
			return nil, fmt.Errorf("modutil: decode stored element: bad attribute")
		}
		e.Attrs = append(e.Attrs, xmlstream.Attr{Space: a[0], Local: a[1], Value: a[2]})
	}
	for _, c := range r.C {
		if len(c) > 0 && c[0] == '"' {
			var s string
			if err := json.Unmarshal(c, &s); err != nil {
				return nil, fmt.Errorf("modutil: decode stored text: %w", err)
			}
			e.Nodes = append(e.Nodes, xmlstream.CharData(s))
			continue
		}
		ce, err := decodeRaw(c, depth+1)
		if err != nil {
			return nil, err
		}
		e.Nodes = append(e.Nodes, ce)
	}
	return e, nil
}

// RemoveUserOnDelete registers an EvUserRemoved hook that deletes the user's rows
// from tables keyed "user\x00..." (prefix) and tables keyed "user" (exact).
func RemoveUserOnDelete(h module.Host, prefixTables, exactTables []string) {
	h.Hook(module.EvUserRemoved, 50, func(ctx context.Context, h module.Host, ev *module.EventData) bool {
		u := RemovedUser(h, ev.User)
		if u == "" {
			return false
		}
		var ops []storage.Op
		for _, t := range prefixTables {
			ops = append(ops, storage.DeletePrefix(t, UserPrefix(u)))
		}
		for _, t := range exactTables {
			ops = append(ops, storage.Delete(t, u))
		}
		if err := h.Store().Apply(ctx, ops...); err != nil {
			h.Logger().Error("purging removed user's data", "user", u, "tables", append(prefixTables, exactTables...), "err", err)
		}
		return false
	})
}

// Declare declares durable disc tables.
func Declare(ctx context.Context, st storage.Store, names ...string) error {
	for _, n := range names {
		if err := st.Declare(ctx, storage.TableSpec{Name: n, Copy: storage.Disc}); err != nil {
			return fmt.Errorf("declare table %s: %w", n, err)
		}
	}
	return nil
}

// clusterer is implemented by a core that routes between nodes.
type clusterer interface{ Clustered() bool }

// Clustered reports whether h routes between nodes.
func Clustered(h module.Host) bool {
	c, ok := h.(clusterer)
	return ok && c.Clustered()
}

// lateCatchUp bounds a late look's wait for this node to catch up.
const lateCatchUp = 5 * time.Second

// LateLook runs look once, delay from now, if h routes between nodes, after
// this node caught up with the cluster (storage.CatchUp, at most 5 s): a
// module's second look, after a session came up, at what other nodes stored
// for it before they saw the session — whatever was committed anywhere by then
// is read, however late this node applies it. what names the look in the log
// should the catch-up fail (the look runs anyway).
func LateLook(h module.Host, delay time.Duration, what string, look func()) {
	if !Clustered(h) {
		return
	}
	time.AfterFunc(delay, func() {
		ctx, cancel := context.WithTimeout(context.Background(), lateCatchUp)
		if err := storage.CatchUp(ctx, h.Store()); err != nil {
			h.Logger().Debug("catching up with the cluster before a late look", "look", what, "err", err)
		}
		cancel()
		look()
	})
}
