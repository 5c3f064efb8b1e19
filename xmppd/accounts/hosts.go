package accounts

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// UserAccounts is one host's user database as module.Accounts describes it
// (users named by localpart): an *Accounts view or an authentication backend.
type UserAccounts interface {
	Exists(ctx context.Context, user string) (bool, error)
	Create(ctx context.Context, user, password string) error
	SetPassword(ctx context.Context, user, password string) error
	Delete(ctx context.Context, user string) error
	List(ctx context.Context) ([]string, error)
}

// Hosts is the user database of a server with virtual hosts: it names users by
// their user key (module.UserKey: the localpart on the default host,
// localpart@host on another one) and hands each call to that host's
// UserAccounts (whose backends are independent: one failing affects only its
// host). It implements module.Accounts. Hosts are Set before the server starts;
// it is read-only afterwards.
type Hosts struct {
	def string
	m   map[string]UserAccounts
}

// ErrNoHost is returned for a user key naming a host not served.
var ErrNoHost = errors.New("accounts: host not served")

// NewHosts returns the user database of default host def (add the hosts with Set).
func NewHosts(def string) *Hosts { return &Hosts{def: def, m: map[string]UserAccounts{}} }

// Set makes a the accounts of host domain.
func (h *Hosts) Set(domain string, a UserAccounts) { h.m[domain] = a }

// For returns the accounts of host domain, nil if it is not served.
func (h *Hosts) For(domain string) UserAccounts { return h.m[domain] }

// split returns the host's accounts and the localpart of a user key.
func (h *Hosts) split(key string) (UserAccounts, string, error) {
	local, host, qualified := strings.Cut(key, "@")
	if !qualified {
		host = h.def
	}
	a := h.m[host]
	if a == nil {
		return nil, "", fmt.Errorf("%w: %q", ErrNoHost, host)
	}
	return a, local, nil
}

// Exists implements module.Accounts; a user of a host not served does not exist.
func (h *Hosts) Exists(ctx context.Context, key string) (bool, error) {
	a, u, err := h.split(key)
	if err != nil {
		return false, nil
	}
	return a.Exists(ctx, u)
}

// Create implements module.Accounts.
func (h *Hosts) Create(ctx context.Context, key, password string) error {
	a, u, err := h.split(key)
	if err != nil {
		return err
	}
	return a.Create(ctx, u, password)
}

// SetPassword implements module.Accounts.
func (h *Hosts) SetPassword(ctx context.Context, key, password string) error {
	a, u, err := h.split(key)
	if err != nil {
		return err
	}
	return a.SetPassword(ctx, u, password)
}

// Delete implements module.Accounts.
func (h *Hosts) Delete(ctx context.Context, key string) error {
	a, u, err := h.split(key)
	if err != nil {
		return err
	}
	return a.Delete(ctx, u)
}

// List implements module.Accounts: the default host's users, then every other
// host's (as localpart@host), hosts in name order. A host whose backend cannot
// list users (external, sql, ldap) is left out; its error is returned only when
// no host could list.
func (h *Hosts) List(ctx context.Context) ([]string, error) {
	hosts := make([]string, 0, len(h.m))
	for d := range h.m {
		if d != h.def {
			hosts = append(hosts, d)
		}
	}
	sort.Strings(hosts)
	hosts = append([]string{h.def}, hosts...)
	var out []string
	var firstErr error
	listed := false
	for _, d := range hosts {
		a := h.m[d]
		if a == nil {
			continue
		}
		us, err := a.List(ctx)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", d, err)
			}
			continue
		}
		listed = true
		for _, u := range us {
			if d != h.def {
				u += "@" + d
			}
			out = append(out, u)
		}
	}
	if !listed && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}
