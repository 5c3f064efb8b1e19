// Package accounts is xmppd's user database: one row per user in the durable table
// "users", holding only salted SCRAM keys (salt, iteration count, StoredKey,
// ServerKey) for SHA-1 and SHA-256, never the password. It implements
// module.Accounts and gives the SASL code the keys it needs.
//
// It owns the "users" table; it must not import c2s, router, server or any module.
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"xedge/storage"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/jid"
)

// Table is the durable table holding users.
const Table = "users"

// ErrInvalidUser is returned for a username that is not a valid localpart.
var ErrInvalidUser = errors.New("accounts: invalid username")

// ErrNoUser is returned by SetPassword and Delete for an unknown user.
var ErrNoUser = errors.New("accounts: no such user")

// Record is what the users table stores for one user.
type Record struct {
	SHA1   scram.Keys `json:"scram_sha1"`
	SHA256 scram.Keys `json:"scram_sha256"`
}

// Keys returns the keys for a SCRAM mechanism name.
func (r Record) Keys(mech string) scram.Keys {
	if mech == scram.SHA1 {
		return r.SHA1
	}
	return r.SHA256
}

// Accounts implements module.Accounts over a storage.Store.
//
// With virtual hosting one users table holds every host's accounts: those of
// the default host (the domain given to New) under their localpart, as before
// hosts existed, and those of another host under localpart@host (a localpart
// never holds '@'). ForHost returns the view of one host, which names users by
// localpart alone.
type Accounts struct {
	store      storage.Store
	domain     string
	suffix     string // "" for the default host, "@host" for another host's view
	iterations int
	onRemoved  func(ctx context.Context, user string)
}

// ForHost returns the accounts of host domain: the same table, keys
// localpart@domain (a (*Accounts) of the default host returns itself for its
// own domain). Its removal callback is given localpart@domain, the user's key
// as module.UserKey names it.
func (a *Accounts) ForHost(domain string) *Accounts {
	if domain == a.domain && a.suffix == "" {
		return a
	}
	v := *a
	v.domain, v.suffix = domain, "@"+domain
	return &v
}

// Domain is the host whose accounts a names.
func (a *Accounts) Domain() string { return a.domain }

// key is the users table's key of a prepared localpart.
func (a *Accounts) key(u string) string { return u + a.suffix }

// New returns the accounts of domain; onRemoved (may be nil) runs after a delete.
func New(store storage.Store, domain string, onRemoved func(ctx context.Context, user string)) *Accounts {
	return &Accounts{store: store, domain: domain, iterations: scram.DefaultIterations, onRemoved: onRemoved}
}

// Start declares the users table.
func (a *Accounts) Start(ctx context.Context) error {
	if err := a.store.Declare(ctx, storage.TableSpec{Name: Table, Copy: storage.Disc}); err != nil {
		return fmt.Errorf("accounts: declare: %w", err)
	}
	return nil
}

// Stop does nothing; the store is closed by its owner.
func (a *Accounts) Stop(context.Context) error { return nil }

// Normalize prepares a username as a JID localpart.
func (a *Accounts) Normalize(user string) (string, error) {
	if user == "" {
		return "", ErrInvalidUser
	}
	j, err := jid.New(user, a.domain, "")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidUser, err)
	}
	return j.Local, nil
}

// Get returns a user's record.
func (a *Accounts) Get(user string) (Record, bool, error) {
	t, err := a.store.Durable(Table)
	if err != nil {
		return Record{}, false, fmt.Errorf("accounts: %w", err)
	}
	v, ok, err := t.Get(a.key(user))
	if err != nil || !ok {
		return Record{}, false, err
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, false, fmt.Errorf("accounts: decode %q: %w", user, err)
	}
	return r, true, nil
}

// Lookup returns the SCRAM lookup function for mech, for scram.NewServer.
func (a *Accounts) Lookup(mech string) scram.Lookup {
	return func(user string) (scram.Keys, bool, error) {
		u, err := a.Normalize(user)
		if err != nil {
			return scram.Keys{}, false, nil
		}
		r, ok, err := a.Get(u)
		if err != nil || !ok {
			return scram.Keys{}, false, err
		}
		k := r.Keys(mech)
		if len(k.StoredKey) == 0 {
			// Imported with another hash's keys only (ejabberd and Prosody export
			// SCRAM-SHA-1): this mechanism fails as for a wrong password and the
			// client falls back to one the user has keys for.
			return scram.Keys{}, false, nil
		}
		return k, true, nil
	}
}

// CheckPassword verifies a plaintext password (SASL PLAIN) and returns the prepared user.
func (a *Accounts) CheckPassword(user, password string) (string, bool, error) {
	u, err := a.Normalize(user)
	if err != nil {
		return "", false, nil
	}
	r, ok, err := a.Get(u)
	if err != nil || !ok {
		return u, false, err
	}
	if len(r.SHA256.StoredKey) == 0 { // imported with SCRAM-SHA-1 keys only
		return u, r.SHA1.Verify(scram.SHA1, password), nil
	}
	return u, r.SHA256.Verify(scram.SHA256, password), nil
}

func (a *Accounts) record(password string) ([]byte, error) {
	if password == "" {
		return nil, errors.New("accounts: empty password")
	}
	k1, err := scram.Derive(scram.SHA1, password, a.iterations)
	if err != nil {
		return nil, err
	}
	k256, err := scram.Derive(scram.SHA256, password, a.iterations)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Record{SHA1: k1, SHA256: k256})
}

// Exists reports whether user exists.
func (a *Accounts) Exists(_ context.Context, user string) (bool, error) {
	u, err := a.Normalize(user)
	if err != nil {
		return false, nil
	}
	t, err := a.store.Durable(Table)
	if err != nil {
		return false, fmt.Errorf("accounts: %w", err)
	}
	_, ok, err := t.Get(a.key(u))
	return ok, err
}

// Create adds a user; an existing user yields an error wrapping storage.ErrConflict.
func (a *Accounts) Create(ctx context.Context, user, password string) error {
	_, err := a.write(ctx, user, password, storage.CondAbsent, "create")
	return err
}

// SetPassword replaces a user's keys; an unknown user yields ErrNoUser.
func (a *Accounts) SetPassword(ctx context.Context, user, password string) error {
	_, err := a.write(ctx, user, password, storage.CondPresent, "set password")
	return err
}

// Delete removes a user and then runs the removal callback.
func (a *Accounts) Delete(ctx context.Context, user string) error {
	u, err := a.write(ctx, user, "", storage.CondPresent, "delete")
	if err != nil {
		return err
	}
	if a.onRemoved != nil {
		a.onRemoved(ctx, a.key(u))
	}
	return nil
}

// write puts new keys for password (or deletes the user when password is "" and
// what is "delete") under the condition, mapping a failed condition to the
// user-facing error, and returns the prepared username.
func (a *Accounts) write(ctx context.Context, user, password string, cond storage.CondKind, what string) (string, error) {
	u, err := a.Normalize(user)
	if err != nil {
		return "", err
	}
	op := storage.Delete(Table, a.key(u))
	if what != "delete" {
		rec, err := a.record(password)
		if err != nil {
			return "", err
		}
		op = storage.Put(Table, a.key(u), rec)
	}
	if err := a.store.Apply(ctx, op.If(cond)); err != nil {
		switch {
		case errors.Is(err, storage.ErrConflict) && cond == storage.CondAbsent:
			return "", fmt.Errorf("accounts: user %q exists: %w", u, err)
		case errors.Is(err, storage.ErrConflict):
			return "", fmt.Errorf("%w: %q", ErrNoUser, u)
		}
		return "", fmt.Errorf("accounts: %s %q: %w", what, u, err)
	}
	return u, nil
}

// List returns the host's users (localparts) in key order.
func (a *Accounts) List(context.Context) ([]string, error) {
	t, err := a.store.Durable(Table)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	var out []string
	err = t.Scan("", func(k string, _ []byte) bool {
		local, host, other := strings.Cut(k, "@")
		switch {
		case a.suffix == "" && !other:
			out = append(out, k)
		case a.suffix != "" && other && "@"+host == a.suffix:
			out = append(out, local)
		}
		return true
	})
	return out, err
}
