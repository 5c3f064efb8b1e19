package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig configures auth_method ldap (go-ldap): the user's entry is found
// by a search (as ldap-rootdn, or anonymously) under ldap-base for
// (&(UID=user)FILTER), then the password is checked by binding as that entry.
// The names are ejabberd's ldap_* options.
type LDAPConfig struct {
	Servers   []string // ldap-servers: host names or addresses, tried in order
	Port      int      // ldap-port (default 389, 636 with ldap-encrypt tls)
	Encrypt   string   // ldap-encrypt: none, tls (LDAPS) or starttls
	TLSVerify bool     // ldap-tls-verify: verify the server's certificate
	CAFile    string   // ldap-tls-cacertfile: CA bundle for it (default: the system's)
	RootDN    string   // ldap-rootdn: DN the searches bind as (empty: anonymous)
	Password  string   // ldap-password: its password
	Base      string   // ldap-base: where users are searched
	UIDs      []string // ldap-uids: attributes holding the username (default uid)
	Filter    string   // ldap-filter: extra filter the entry must match, e.g. (objectClass=inetOrgPerson)
}

type ldapBackend struct {
	cfg     LDAPConfig
	timeout time.Duration
	tls     *tls.Config
	log     *slog.Logger
	idle    chan *ldap.Conn // connections kept between logins (with ldap-rootdn only)
}

// ldapIdle is how many connections are kept between logins.
const ldapIdle = 4

func newLDAP(cfg LDAPConfig, timeout time.Duration, log *slog.Logger) (*ldapBackend, error) {
	if len(cfg.Servers) == 0 || cfg.Base == "" {
		return nil, errors.New("auth method ldap needs ldap-servers and ldap-base")
	}
	if len(cfg.UIDs) == 0 {
		cfg.UIDs = []string{"uid"}
	}
	switch cfg.Encrypt {
	case "", "none":
		cfg.Encrypt = "none"
	case "tls", "starttls":
	default:
		return nil, fmt.Errorf("ldap-encrypt %q: want none, tls or starttls", cfg.Encrypt)
	}
	if cfg.Port == 0 {
		cfg.Port = 389
		if cfg.Encrypt == "tls" {
			cfg.Port = 636
		}
	}
	if cfg.Filter != "" {
		if _, err := ldap.CompileFilter(cfg.Filter); err != nil {
			return nil, fmt.Errorf("ldap-filter %q: %w", cfg.Filter, err)
		}
	}
	b := &ldapBackend{cfg: cfg, timeout: timeout, log: log, idle: make(chan *ldap.Conn, ldapIdle)}
	if cfg.Encrypt != "none" {
		b.tls = &tls.Config{InsecureSkipVerify: !cfg.TLSVerify} //nolint:gosec // the operator's ldap-tls-verify
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ldap-tls-cacertfile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ldap-tls-cacertfile %s: no certificate", cfg.CAFile)
			}
			b.tls.RootCAs = pool
		}
	}
	return b, nil
}

func (b *ldapBackend) Start(context.Context) error { return nil } // connections are made on demand

func (b *ldapBackend) Stop(context.Context) error {
	for {
		select {
		case c := <-b.idle:
			c.Close()
		default:
			return nil
		}
	}
}

// with runs fn on a connection: a kept one (fn binds as ldap-rootdn first, so
// whoever it was bound as before does not matter) or a new one. A kept
// connection the server has dropped meanwhile fails with a network error: fn
// runs once more on a new one. Connections are kept only with ldap-rootdn
// (anonymous searches would run as the last user bound).
func (b *ldapBackend) with(ctx context.Context, fn func(c *ldap.Conn) error) error {
	for attempt := 0; ; attempt++ {
		var c *ldap.Conn
		kept := false
		select {
		case c = <-b.idle:
			kept = true
		default:
			var err error
			if c, err = b.dial(ctx); err != nil {
				return err
			}
		}
		err := fn(c)
		switch {
		case err != nil && kept && attempt == 0 && (c.IsClosing() || ldap.IsErrorWithCode(err, ldap.ErrorNetwork)):
			c.Close()
			continue
		case err == nil && b.cfg.RootDN != "" && !c.IsClosing():
			select {
			case b.idle <- c:
				return nil
			default:
			}
		}
		c.Close()
		return err
	}
}

// dial connects to the first server that answers, before ctx ends.
func (b *ldapBackend) dial(ctx context.Context) (*ldap.Conn, error) {
	timeout := b.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	var errs []error
	for _, h := range b.cfg.Servers {
		if timeout <= 0 {
			errs = append(errs, context.DeadlineExceeded)
			break
		}
		scheme := "ldap"
		if b.cfg.Encrypt == "tls" {
			scheme = "ldaps"
		}
		addr := scheme + "://" + net.JoinHostPort(h, strconv.Itoa(b.cfg.Port))
		opts := []ldap.DialOpt{ldap.DialWithDialer(&net.Dialer{Timeout: timeout})}
		if b.cfg.Encrypt == "tls" {
			cfg := b.tls.Clone()
			cfg.ServerName = h
			opts = append(opts, ldap.DialWithTLSConfig(cfg))
		}
		c, err := ldap.DialURL(addr, opts...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.SetTimeout(timeout)
		if b.cfg.Encrypt == "starttls" {
			cfg := b.tls.Clone()
			cfg.ServerName = h
			if err := c.StartTLS(cfg); err != nil {
				c.Close()
				errs = append(errs, fmt.Errorf("starttls %s: %w", h, err))
				continue
			}
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: ldap: %w", ErrUnavailable, errors.Join(errs...))
}

// filter is the search filter of a user.
func (b *ldapBackend) filter(user string) string {
	u := ldap.EscapeFilter(user)
	var f strings.Builder
	f.WriteString("(&")
	if len(b.cfg.UIDs) == 1 {
		f.WriteString("(" + b.cfg.UIDs[0] + "=" + u + ")")
	} else {
		f.WriteString("(|")
		for _, a := range b.cfg.UIDs {
			f.WriteString("(" + a + "=" + u + ")")
		}
		f.WriteString(")")
	}
	f.WriteString(b.cfg.Filter + ")")
	return f.String()
}

// findDN binds as the root DN (if any) and finds the user's entry; ok false
// when there is none (or, ambiguously, several).
func (b *ldapBackend) findDN(c *ldap.Conn, user string) (string, bool, error) {
	if b.cfg.RootDN != "" {
		if err := c.Bind(b.cfg.RootDN, b.cfg.Password); err != nil {
			return "", false, fmt.Errorf("%w: ldap: bind as ldap-rootdn: %w", ErrUnavailable, err)
		}
	}
	req := ldap.NewSearchRequest(b.cfg.Base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2,
		int(b.timeout/time.Second), false, b.filter(user), []string{"1.1"}, nil)
	res, err := c.Search(req)
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return "", false, fmt.Errorf("%w: ldap: search: %w", ErrUnavailable, err)
	}
	switch {
	case res == nil || len(res.Entries) == 0:
		return "", false, nil
	case len(res.Entries) > 1:
		b.log.Warn("ldap search found several entries for one user; refusing it", "user", user, "filter", b.filter(user))
		return "", false, nil
	}
	return res.Entries[0].DN, true, nil
}

func (b *ldapBackend) Check(ctx context.Context, user, password string) (bool, error) {
	if password == "" {
		return false, nil // an empty password would be an unauthenticated bind, which succeeds
	}
	var ok bool
	err := b.with(ctx, func(c *ldap.Conn) error {
		var dn string
		var err error
		if dn, ok, err = b.findDN(c, user); err != nil || !ok {
			return err
		}
		ok, err = b.bindAs(c, user, dn, password)
		return err
	})
	return ok, err
}

// bindAs checks password by binding as dn.
func (b *ldapBackend) bindAs(c *ldap.Conn, user, dn, password string) (bool, error) {
	err := c.Bind(dn, password)
	switch {
	case err == nil:
		return true, nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		return false, nil
	case ldap.IsErrorWithCode(err, ldap.ErrorNetwork), ldap.IsErrorWithCode(err, ldap.LDAPResultBusy),
		ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable), ldap.IsErrorWithCode(err, ldap.LDAPResultServerDown),
		ldap.IsErrorWithCode(err, ldap.LDAPResultTimeLimitExceeded):
		return false, fmt.Errorf("%w: ldap: bind: %w", ErrUnavailable, err)
	}
	// Locked accounts and the like (unwillingToPerform, ...): refused.
	b.log.Debug("ldap bind refused", "user", user, "err", err)
	return false, nil
}

func (b *ldapBackend) Exists(ctx context.Context, user string) (bool, error) {
	var ok bool
	err := b.with(ctx, func(c *ldap.Conn) error {
		var err error
		_, ok, err = b.findDN(c, user)
		return err
	})
	return ok, err
}
