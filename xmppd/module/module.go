// Package module is the contract between xmppd's core (c2s streams, router, session
// manager, accounts) and its feature modules (roster, presence, offline, disco,
// vcard, private, blocking, carbons, ...), in the spirit of ejabberd's gen_mod and
// Prosody's module API: a module registers IQ handlers by namespace, hooks on stanza
// events, stream features and disco features, and keeps its data in storage tables it
// declares itself.
//
// It owns only interfaces and small stanza helpers; it must not import the core
// packages that implement Host (that would be a cycle) nor any module.
package module

import (
	"context"
	"errors"
	"log/slog"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// Module is one feature. The core calls Start in registration order after storage is
// open and before listeners accept, and Stop in reverse order.
type Module interface {
	Name() string
	Start(ctx context.Context, h Host) error
	Stop(ctx context.Context) error
}

// Session is a bound local c2s session as modules see it. Safe for concurrent use.
type Session interface {
	// ID is unique per stream for the life of the process.
	ID() string
	// JID is the full JID bound to the session.
	JID() jid.JID
	// Send queues a stanza for the client. It never blocks on the network; a client
	// that cannot keep up is disconnected by the core.
	Send(st *xmlstream.Element)
	// Presence is the last available presence the session broadcast (nil: not
	// available). Set by the presence module; the router reads it and Priority for
	// the delivery rules of RFC 6121 §8.
	Presence() *xmlstream.Element
	SetPresence(p *xmlstream.Element)
	Priority() int
	// Interested reports whether the session requested the roster (RFC 6121 §2.1.6).
	Interested() bool
	SetInterested()
	// Value and SetValue hold per-session module state (carbons on, CSI inactive, ...).
	Value(key any) any
	SetValue(key, value any)
	// Close ends the stream with the given stream error condition ("" = clean close).
	Close(condition, text string)
}

// Accounts is the user database (SCRAM keys only, never passwords).
type Accounts interface {
	Exists(ctx context.Context, user string) (bool, error)
	// Create fails with an error wrapping storage.ErrConflict if the user exists.
	Create(ctx context.Context, user, password string) error
	SetPassword(ctx context.Context, user, password string) error
	// Delete removes the account and fires EvUserRemoved so modules purge its data.
	Delete(ctx context.Context, user string) error
	List(ctx context.Context) ([]string, error)
}

// Host is what the core offers modules.
type Host interface {
	Domain() string
	Store() storage.Store
	Accounts() Accounts
	Logger() *slog.Logger
	// Route sends a stanza whose from and to are set: to a local user (applying the
	// delivery rules and EvDeliver hooks), to the server or a local user's bare JID
	// for IQs (dispatched to HandleIQ handlers), or onwards to other nodes.
	Route(ctx context.Context, st *xmlstream.Element)
	// Sessions returns the local user's bound sessions (bare JID).
	Sessions(bare jid.JID) []Session
	// Session returns the session bound to a full JID, or nil.
	Session(full jid.JID) Session
	// HandleIQ registers the handler for IQs (get/set) addressed to the server or to a
	// local user's bare JID whose payload has namespace ns.
	HandleIQ(ns string, h IQHandler)
	// Hook registers fn for an event; lower prio runs first. fn returns true to stop
	// the chain (the stanza was consumed).
	Hook(ev Event, prio int, fn HookFunc)
	// StreamFeature adds a feature to <stream:features> (f is called per stream).
	StreamFeature(f FeatureFunc)
	// DiscoFeature advertises a namespace in the server's disco#info.
	DiscoFeature(ns string)
	// DiscoFeatures lists what modules advertised (for the disco module and caps).
	DiscoFeatures() []string
}

// ParsedRouter is implemented by a Host that can route a stanza whose from and to
// the caller has already prepared: from and to must be exactly what st's attributes
// say (to the zero JID if st has no to), and st is handed over — the caller must
// neither use nor change it afterwards, so the core may deliver st itself instead
// of a copy. Modules that send many fresh stanzas (presence broadcasts) use it when
// the Host offers it and Host.Route otherwise.
type ParsedRouter interface {
	RouteParsed(ctx context.Context, st *xmlstream.Element, from, to jid.JID)
}

// DomainHandler takes a stanza addressed to a domain served through HandleDomain or
// SetRemoteRoute (or to a JID at it). from and to are prepared and match st's
// attributes; st is the handler's to keep (the router hands over a stanza nobody
// else holds). It must not block on the network: queue and return.
type DomainHandler func(ctx context.Context, st *xmlstream.Element, from, to jid.JID)

// DomainRouter is implemented by a Host that routes stanzas for domains other than
// Domain() to module handlers: a MUC service (conference.example), an external
// component (XEP-0114), server-to-server links for remote domains. Modules
// type-assert their Host to it.
type DomainRouter interface {
	// HandleDomain routes every stanza addressed to domain, or to a JID at domain,
	// to h; a later call replaces the handler and a nil h removes it.
	HandleDomain(domain string, h DomainHandler)
	// SetRemoteRoute routes stanzas for domains that neither the server nor a
	// HandleDomain handler serves (s2s); nil restores the default, which bounces
	// them with <remote-server-not-found/>.
	SetRemoteRoute(h DomainHandler)
	// ServedDomains lists the domains registered with HandleDomain, sorted (for the
	// server's disco#items).
	ServedDomains() []string
}

// IQ is an IQ addressed to the server or to a bare JID the server answers for.
type IQ struct {
	Stanza   *xmlstream.Element
	From, To jid.JID
	// Session is the local session that sent it, or nil (another node, a peer server).
	Session Session
}

// Payload returns the IQ's first child element.
func (iq *IQ) Payload() *xmlstream.Element { return iq.Stanza.FirstChild() }

// IQHandler answers an IQ; it must route exactly one result or error reply (use
// Result and Error).
type IQHandler func(ctx context.Context, h Host, iq *IQ)

// Event names a hook point.
type Event int

const (
	// EvC2SIn: a stanza from a local session (from stamped, to set or empty), before
	// routing. Presence, carbons (sent copies) and blocking (outgoing) hook here.
	EvC2SIn Event = iota
	// EvDeliver: a stanza about to be delivered to a local account (to is a local
	// user), before the delivery rules. Blocking, inbound subscription handling and
	// presence bookkeeping hook here.
	EvDeliver
	// EvDelivered: a message was delivered to the local sessions in Event.Targets.
	// Carbons (received copies) hook here.
	EvDelivered
	// EvOffline: a message for a local account that has no session able to take it.
	// The offline module stores it and returns true; otherwise the core bounces it.
	EvOffline
	// EvSessionBound: a resource was bound.
	EvSessionBound
	// EvSessionClosed: a bound session ended (after the stream closed). The presence
	// module broadcasts unavailable presence here if the session was available.
	EvSessionClosed
	// EvUserRemoved: an account was deleted; modules purge its data.
	EvUserRemoved
)

// Event is what a HookFunc receives.
type EventData struct {
	Stanza   *xmlstream.Element
	From, To jid.JID
	Session  Session   // the local session involved, if any
	Targets  []Session // EvDelivered only
	User     string    // EvUserRemoved only
}

// HookFunc handles an event; true stops the chain. ev is the hook's for the call
// only (the router reuses it): keep what it holds, never ev itself nor its
// Targets slice (whose array the router reuses too).
type HookFunc func(ctx context.Context, h Host, ev *EventData) (stop bool)

// FeatureFunc returns a stream feature for a stream in the given state, or nil.
type FeatureFunc func(s StreamState) *xmlstream.Element

// StreamState tells a FeatureFunc where the stream is.
type StreamState struct {
	Secure        bool // TLS is on
	Authenticated bool
	Bound         bool
}

// Stanza error types and conditions (RFC 6120 §8.3).
const (
	NSStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

	ErrAuth     = "auth"
	ErrCancel   = "cancel"
	ErrContinue = "continue"
	ErrModify   = "modify"
	ErrWait     = "wait"
)

// Result returns the result IQ for iq with an optional payload.
func Result(iq *xmlstream.Element, payload ...*xmlstream.Element) *xmlstream.Element {
	r := xmlstream.New(iq.Space, "iq", "type", "result", "id", iq.Attr("id"))
	if to := iq.Attr("from"); to != "" {
		r.SetAttr("to", to)
	}
	if from := iq.Attr("to"); from != "" {
		r.SetAttr("from", from)
	}
	for _, p := range payload {
		r.Append(p)
	}
	return r
}

// Error returns the error reply for st (RFC 6120 §8.3): from and to swapped, the
// original payload kept, and <error type=typ><cond/>[<text/>]</error> appended.
func Error(st *xmlstream.Element, typ, cond, text string) *xmlstream.Element {
	r := st.Copy()
	r.SetAttr("type", "error")
	r.SetAttr("to", st.Attr("from"))
	r.SetAttr("from", st.Attr("to"))
	e := xmlstream.New(st.Space, "error", "type", typ)
	e.Append(xmlstream.New(NSStanzas, cond))
	if text != "" {
		e.Append(xmlstream.New(NSStanzas, "text").AppendText(text))
	}
	r.RemoveChildren("", "error")
	r.Append(e)
	return r
}

// StoreError returns the error reply for st when a storage write or read failed
// (xmppd's rule for every module and the core): storage.ErrUnavailable (no quorum,
// read-only, store stopped) becomes <resource-constraint/> of type wait — the client
// may retry later — and any other error <internal-server-error/> of type wait.
// Nothing is stored and the server keeps serving; log the cause once.
func StoreError(st *xmlstream.Element, err error) *xmlstream.Element {
	if errors.Is(err, storage.ErrUnavailable) {
		return Error(st, ErrWait, "resource-constraint", "storage unavailable, retry later")
	}
	return Error(st, ErrWait, "internal-server-error", "")
}

// VirtualHosts is implemented by a Host serving several XMPP domains (virtual
// hosting, ejabberd's hosts). Domain() stays the default host. Modules use the
// helpers below, which fall back to Domain() alone for a Host without it.
type VirtualHosts interface {
	// Hosts lists the served domains (the default host among them).
	Hosts() []string
	// IsLocal reports whether domain is one of them.
	IsLocal(domain string) bool
}

// Hosts returns the domains h serves.
func Hosts(h Host) []string {
	if v, ok := h.(VirtualHosts); ok {
		return v.Hosts()
	}
	return []string{h.Domain()}
}

// IsLocal reports whether h serves domain (users at it are local accounts).
func IsLocal(h Host, domain string) bool {
	if v, ok := h.(VirtualHosts); ok {
		return v.IsLocal(domain)
	}
	return domain == h.Domain()
}

// UserKey is how a local account is named to Accounts, in storage keys of
// per-user data and in EventData.User: the localpart for a user of the default
// host (so data written before virtual hosting stays valid unchanged) and
// localpart@domain for a user of another host. A localpart never holds '@', so
// the two forms cannot collide.
func UserKey(h Host, j jid.JID) string {
	if j.Domain == h.Domain() {
		return j.Local
	}
	return j.Local + "@" + j.Domain
}

// UserJID is the inverse of UserKey: the bare JID of a user key.
func UserJID(h Host, key string) jid.JID {
	for i := 0; i < len(key); i++ {
		if key[i] == '@' {
			return jid.JID{Local: key[:i], Domain: key[i+1:]}
		}
	}
	return jid.JID{Local: key, Domain: h.Domain()}
}
