// Package auth is xmppd's choice of authentication backend, in ejabberd's
// auth_method vocabulary: internal (the SCRAM keys of package accounts),
// external (ejabberd's extauth protocol to a pool of operator scripts), sql
// (PostgreSQL with an operator-written password query; plain, SCRAM and bcrypt
// formats) and ldap (search the user's entry, then bind as it). One file per
// backend; this file holds what they share: the Backend contract, the Service the
// server hands to c2s and the router (it implements module.Accounts with a cache
// of "does this user exist" answers), and the failure rule: a backend that cannot
// answer (script dead, database down, directory unreachable) yields an error
// wrapping ErrUnavailable, logged once per outage, which c2s turns into
// <temporary-auth-failure/>.
//
// It owns the backends' connections and processes; it must not import c2s,
// router, server or any module.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/jid"
)

// Methods (ejabberd's auth_method values).
const (
	Internal = "internal"
	External = "external"
	SQL      = "sql"
	LDAP     = "ldap"
)

var (
	// ErrUnavailable wraps every failure of a backend to answer.
	ErrUnavailable = errors.New("auth: backend unavailable")
	// ErrNotSupported is returned for an operation the backend cannot do
	// (creating an account in LDAP, listing the users of a script).
	ErrNotSupported = errors.New("auth: not supported by this auth method")
)

// Backend is one authentication backend. Users are prepared localparts
// (jid.New's nodeprep), domain the XMPP domain.
type Backend interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	// Check verifies a password: false for a wrong password or an unknown user,
	// an error (wrapping ErrUnavailable) when the backend cannot answer.
	Check(ctx context.Context, user, password string) (bool, error)
	// Exists reports whether the user exists.
	Exists(ctx context.Context, user string) (bool, error)
}

// SCRAMSource is implemented by a backend that can hand out stored SCRAM keys.
type SCRAMSource interface {
	// SCRAMMechanisms lists the SCRAM mechanisms it can serve (best first).
	SCRAMMechanisms() []string
	// SCRAMKeys returns the user's stored keys for mech; ok false for an unknown user.
	SCRAMKeys(ctx context.Context, mech, user string) (scram.Keys, bool, error)
}

// Writer is implemented by a backend that can create, re-key and remove users.
type Writer interface {
	Create(ctx context.Context, user, password string) error
	SetPassword(ctx context.Context, user, password string) error
	Delete(ctx context.Context, user string) error
}

// Config selects and configures the backend.
type Config struct {
	Method    string        // internal, external, sql, ldap
	CacheTime time.Duration // how long Exists answers of non-internal backends are kept (0: not cached)
	Timeout   time.Duration // bound of one backend request (default 5 s)
	External  ExternalConfig
	SQL       SQLConfig
	LDAP      LDAPConfig
}

// Service is the configured backend as c2s and the router use it.
type Service struct {
	cfg       Config
	domain    string
	acc       *accounts.Accounts
	backend   Backend
	log       *slog.Logger
	onRemoved func(ctx context.Context, user string)

	mu    sync.Mutex
	down  bool // an outage was logged; the next success logs the recovery
	cache map[string]cached
}

type cached struct {
	exists bool
	until  time.Time
}

// maxCache bounds the Exists cache; past it the cache starts over.
const maxCache = 100000

// New builds the backend of cfg for domain. acc is the accounts table (the
// internal backend); onRemoved (may be nil) runs after a user is deleted
// through a backend other than internal (internal runs its own).
func New(cfg Config, domain string, acc *accounts.Accounts, onRemoved func(ctx context.Context, user string), log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	log = log.With("component", "auth", "method", cfg.Method)
	s := &Service{cfg: cfg, domain: domain, acc: acc, log: log, onRemoved: onRemoved, cache: map[string]cached{}}
	var err error
	switch cfg.Method {
	case "", Internal:
		s.cfg.Method = Internal
		s.backend = &internalBackend{acc: acc}
	case External:
		s.backend, err = newExternal(cfg.External, domain, cfg.Timeout, log)
	case SQL:
		s.backend, err = newSQL(cfg.SQL, domain, cfg.Timeout, log)
	case LDAP:
		s.backend, err = newLDAP(cfg.LDAP, cfg.Timeout, log)
	default:
		err = fmt.Errorf("unknown auth method %q (want internal, external, sql or ldap)", cfg.Method)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return s, nil
}

// Method is the configured auth method.
func (s *Service) Method() string { return s.cfg.Method }

// Backend is the configured backend.
func (s *Service) Backend() Backend { return s.backend }

// Start starts the backend (connects, spawns the scripts). A backend that is
// not reachable yet does not fail the start: logins fail with
// temporary-auth-failure until it is.
func (s *Service) Start(ctx context.Context) error { return s.backend.Start(ctx) }

// Stop stops the backend.
func (s *Service) Stop(ctx context.Context) error { return s.backend.Stop(ctx) }

// observe logs the first failure of an outage and the recovery after it, so a
// dead backend costs the operator one line, not one per login.
func (s *Service) observe(err error) error {
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return err
	}
	s.mu.Lock()
	was := s.down
	s.down = err != nil
	s.mu.Unlock()
	switch {
	case err != nil && !was:
		s.log.Warn("authentication backend unavailable; clients get temporary-auth-failure until it answers", "err", err)
	case err != nil:
		s.log.Debug("authentication backend still unavailable", "err", err)
	case was:
		s.log.Info("authentication backend answers again")
	}
	return err
}

// CheckPassword verifies a plaintext password (SASL PLAIN).
func (s *Service) CheckPassword(ctx context.Context, user, password string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ok, err := s.backend.Check(ctx, user, password)
	if err = s.observe(err); err != nil {
		return false, err
	}
	if ok {
		s.remember(user, true)
	}
	return ok, nil
}

// SCRAM returns the stored-key lookup of a SCRAM mechanism, or nil when the
// backend cannot serve that mechanism (it keeps no SCRAM keys).
func (s *Service) SCRAM(mech string) scram.Lookup {
	src, ok := s.backend.(SCRAMSource)
	if !ok {
		return nil
	}
	for _, m := range src.SCRAMMechanisms() {
		if m == mech {
			return func(user string) (scram.Keys, bool, error) {
				j, err := jid.New(user, s.domain, "")
				if err != nil || j.Local == "" {
					return scram.Keys{}, false, nil // not a valid username: like an unknown user
				}
				user = j.Local
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
				defer cancel()
				k, ok, err := src.SCRAMKeys(ctx, mech, user)
				return k, ok, s.observe(err)
			}
		}
	}
	return nil
}

// SCRAMMechanisms lists the SCRAM mechanisms the backend serves (none for
// backends that only check passwords: those offer PLAIN, under TLS).
func (s *Service) SCRAMMechanisms() []string {
	if src, ok := s.backend.(SCRAMSource); ok {
		return src.SCRAMMechanisms()
	}
	return nil
}

// CanRegister reports whether accounts can be created (in-band registration).
func (s *Service) CanRegister() bool {
	_, ok := s.backend.(Writer)
	return ok
}

// Exists reports whether user exists (module.Accounts); answers of backends
// other than internal are cached for CacheTime.
func (s *Service) Exists(ctx context.Context, user string) (bool, error) {
	if s.cfg.Method == Internal {
		return s.acc.Exists(ctx, user)
	}
	now := time.Now()
	if s.cfg.CacheTime > 0 {
		s.mu.Lock()
		c, ok := s.cache[user]
		s.mu.Unlock()
		if ok && now.Before(c.until) {
			return c.exists, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ok, err := s.backend.Exists(ctx, user)
	if err = s.observe(err); err != nil {
		return false, err
	}
	s.remember(user, ok)
	return ok, nil
}

func (s *Service) remember(user string, exists bool) {
	if s.cfg.CacheTime <= 0 || s.cfg.Method == Internal {
		return
	}
	s.mu.Lock()
	if len(s.cache) >= maxCache {
		s.cache = map[string]cached{}
	}
	s.cache[user] = cached{exists: exists, until: time.Now().Add(s.cfg.CacheTime)}
	s.mu.Unlock()
}

func (s *Service) forget(user string) {
	s.mu.Lock()
	delete(s.cache, user)
	s.mu.Unlock()
}

func (s *Service) writer() (Writer, error) {
	w, ok := s.backend.(Writer)
	if !ok {
		return nil, fmt.Errorf("%w (%s)", ErrNotSupported, s.cfg.Method)
	}
	return w, nil
}

// Create adds a user (module.Accounts).
func (s *Service) Create(ctx context.Context, user, password string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	s.forget(user)
	return s.observe(w.Create(ctx, user, password))
}

// SetPassword changes a user's password (module.Accounts).
func (s *Service) SetPassword(ctx context.Context, user, password string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	return s.observe(w.SetPassword(ctx, user, password))
}

// Delete removes a user (module.Accounts) and then runs the removal callback.
func (s *Service) Delete(ctx context.Context, user string) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	s.forget(user)
	if err := s.observe(w.Delete(ctx, user)); err != nil {
		return err
	}
	if s.cfg.Method != Internal && s.onRemoved != nil {
		s.onRemoved(ctx, user)
	}
	return nil
}

// List lists the users (module.Accounts): only the internal backend can.
func (s *Service) List(ctx context.Context) ([]string, error) {
	if s.cfg.Method == Internal {
		return s.acc.List(ctx)
	}
	return nil, fmt.Errorf("%w (%s): ask the user directory", ErrNotSupported, s.cfg.Method)
}
