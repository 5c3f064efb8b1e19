// Package storm is xmppd's storm control for client sessions: the presence-storm
// killer of ejabberd's mod_sunshine (a session that sends the same presence more
// than PresenceMax times in a row within PresenceWindow is closed with a
// <policy-violation/> stream error, logged once) and the per-account session cap
// of ejabberd's max_user_sessions (a bind beyond MaxUserSessions replaces the
// oldest session, which gets <conflict/>).
//
// It owns only these policies; connection caps per IP and byte shapers are the
// c2s listener's. It must not import the core packages (server, router, c2s).
package storm

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Config holds the policies (zero values turn a policy off).
type Config struct {
	PresenceMax     int           // identical presences in a row allowed within PresenceWindow
	PresenceWindow  time.Duration // measured from the first of the run
	MaxUserSessions int           // bound resources per account
}

// Defaults are mod_sunshine's (10 in 60 s) and ejabberd.yml's max_user_sessions
// for normal users (10).
func Defaults() Config {
	return Config{PresenceMax: 10, PresenceWindow: 60 * time.Second, MaxUserSessions: 10}
}

// Module is the storm-control module.
type Module struct {
	mu  sync.RWMutex
	cfg Config
	log *slog.Logger
	now func() time.Time
}

// New returns the module with Defaults.
func New() *Module { return &Module{cfg: Defaults(), now: time.Now, log: slog.Default()} }

// Configure replaces the policies (before Start).
func (m *Module) Configure(c Config) {
	m.mu.Lock()
	m.cfg = c
	m.mu.Unlock()
}

func (m *Module) config() Config {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cfg
}

// Name implements module.Module.
func (m *Module) Name() string { return "storm" }

// Start implements module.Module.
func (m *Module) Start(_ context.Context, h module.Host) error {
	m.log = h.Logger().With("module", "storm")
	// Before presence and every other EvC2SIn hook: a storm is cut before it
	// is broadcast.
	h.Hook(module.EvC2SIn, -1000, m.onIn)
	h.Hook(module.EvSessionBound, 1000, m.onBound)
	return nil
}

// Stop implements module.Module.
func (m *Module) Stop(context.Context) error { return nil }

type stateKey struct{}
type boundKey struct{}

// run is a session's current run of identical presences.
type run struct {
	mu     sync.Mutex
	last   string
	first  time.Time
	n      int
	killed bool
}

// presenceKey is what makes two presences identical: the stanza without its id
// (a looping client usually numbers what it resends).
func presenceKey(st *xmlstream.Element) string {
	c := *st
	c.Attrs = slices.DeleteFunc(slices.Clone(st.Attrs), func(a xmlstream.Attr) bool { return a.Space == "" && a.Local == "id" })
	return c.String()
}

func (m *Module) onIn(_ context.Context, _ module.Host, ev *module.EventData) bool {
	if ev.Session == nil || ev.Stanza == nil || ev.Stanza.Local != "presence" {
		return false
	}
	cfg := m.config()
	if cfg.PresenceMax <= 0 {
		return false
	}
	r, _ := ev.Session.Value(stateKey{}).(*run)
	if r == nil {
		r = &run{}
		ev.Session.SetValue(stateKey{}, r)
	}
	key := presenceKey(ev.Stanza)
	now := m.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.killed {
		return true
	}
	if key != r.last || now.Sub(r.first) > cfg.PresenceWindow {
		r.last, r.first, r.n = key, now, 1
		return false
	}
	r.n++
	if r.n <= cfg.PresenceMax {
		return false
	}
	r.killed = true
	m.log.Warn("presence storm: closing the session", "jid", ev.Session.JID().String(),
		"identical", r.n, "within", now.Sub(r.first).Round(time.Millisecond).String())
	ev.Session.Close("policy-violation", "presence storm")
	return true
}

func (m *Module) onBound(_ context.Context, h module.Host, ev *module.EventData) bool {
	if ev.Session == nil {
		return false
	}
	ev.Session.SetValue(boundKey{}, m.now())
	max := m.config().MaxUserSessions
	if max <= 0 {
		return false
	}
	self := ev.Session.JID()
	var others []module.Session
	for _, s := range h.Sessions(self.Bare()) {
		if s.JID() != self {
			others = append(others, s)
		}
	}
	excess := len(others) + 1 - max
	if excess <= 0 {
		return false
	}
	// Oldest first: sessions bound on other nodes (no bind time known here) before
	// local ones, local ones by bind time.
	bound := func(s module.Session) time.Time { t, _ := s.Value(boundKey{}).(time.Time); return t }
	slices.SortStableFunc(others, func(a, b module.Session) int { return bound(a).Compare(bound(b)) })
	for _, s := range others[:excess] {
		m.log.Warn("max-user-sessions reached: replacing the oldest session", "jid", s.JID().String(),
			"new", self.String(), "max", max)
		s.Close("conflict", "Replaced by new connection")
	}
	return false
}
