package auth

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"xedge/xmppd/internal/scram"
	"xedge/xmppd/scramkey"
)

// Password formats of auth_method sql (auth-password-format).
const (
	FormatPlain  = "plain"
	FormatSCRAM  = "scram"
	FormatBcrypt = "bcrypt"
)

// SQLConfig configures auth_method sql: PostgreSQL (through jackc/pgx, chosen
// for its pure-Go protocol implementation and pool) and an operator-written
// query. The query gets the prepared username as $1 (and the XMPP domain as $2
// if it names $2) and returns one row:
//   - plain, bcrypt: one column, the password or its bcrypt hash
//     ("select password from member where lower(username)=$1");
//   - scram: ejabberd's four columns password (the base64 StoredKey, prefixed
//     "sha256:" or "sha512:" for those hashes), serverkey, salt (base64) and
//     iterationcount ("select password, serverkey, salt, iterationcount from
//     users where username=$1 and server_host=$2"); a row with an empty
//     serverkey holds a plain password, as in ejabberd.
type SQLConfig struct {
	URL           string // auth-sql-url: a pgx connection string (postgres://... or key=value)
	PasswordQuery string // auth-sql-password-query
	Format        string // auth-password-format: plain, scram or bcrypt
	SCRAMHash     string // auth-scram-hash: sha1 or sha256, the SCRAM mechanism stored keys serve
	PoolSize      int    // auth-sql-pool-size: connections at most (default 4)
}

type sqlBackend struct {
	cfg    SQLConfig
	domain string
	pcfg   *pgxpool.Config
	log    *slog.Logger
	pool   *pgxpool.Pool
	withD  bool // the query names $2 (the domain)
}

func newSQL(cfg SQLConfig, domain string, timeout time.Duration, log *slog.Logger) (*sqlBackend, error) {
	if cfg.URL == "" || cfg.PasswordQuery == "" {
		return nil, errors.New("auth method sql needs auth-sql-url and auth-sql-password-query")
	}
	switch cfg.Format {
	case "":
		cfg.Format = FormatPlain
	case FormatPlain, FormatSCRAM, FormatBcrypt:
	default:
		return nil, fmt.Errorf("auth-password-format %q: want plain, scram or bcrypt", cfg.Format)
	}
	if _, err := scramHash(cfg.SCRAMHash); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("auth-sql-url: %w", err)
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 4
	}
	pcfg.MaxConns = int32(cfg.PoolSize)
	pcfg.MinConns = 0
	pcfg.ConnConfig.ConnectTimeout = timeout
	return &sqlBackend{cfg: cfg, domain: domain, pcfg: pcfg, log: log,
		withD: strings.Contains(cfg.PasswordQuery, "$2")}, nil
}

// scramHash maps auth-scram-hash to a SCRAM mechanism.
func scramHash(h string) (string, error) {
	switch h {
	case "", "sha", "sha1", "sha-1":
		return scram.SHA1, nil
	case "sha256", "sha-256":
		return scram.SHA256, nil
	}
	return "", fmt.Errorf("auth-scram-hash %q: want sha1 or sha256", h)
}

// Start makes the pool; connections are made on demand, so a database that is
// down does not stop the server (logins wait for it).
func (b *sqlBackend) Start(ctx context.Context) error {
	p, err := pgxpool.NewWithConfig(ctx, b.pcfg)
	if err != nil {
		return fmt.Errorf("auth: sql pool: %w", err)
	}
	b.pool = p
	return nil
}

func (b *sqlBackend) Stop(context.Context) error {
	if b.pool != nil {
		b.pool.Close()
	}
	return nil
}

// credential is what the query returned for a user.
type credential struct {
	plain  string // plain format (or a SCRAM row holding a plain password)
	isHash bool   // bcrypt: plain holds the hash
	scram  bool   // keys and hash are set
	hash   string // sha1, sha256, sha512
	keys   scram.Keys
}

// fetch runs the password query; ok false when it returns no row.
func (b *sqlBackend) fetch(ctx context.Context, user string) (credential, bool, error) {
	if b.pool == nil {
		return credential{}, false, fmt.Errorf("%w: sql: not started", ErrUnavailable)
	}
	args := []any{user}
	if b.withD {
		args = append(args, b.domain)
	}
	rows, err := b.pool.Query(ctx, b.cfg.PasswordQuery, args...)
	if err != nil {
		return credential{}, false, fmt.Errorf("%w: sql: %w", ErrUnavailable, err)
	}
	defer rows.Close()
	var vals []any
	n := 0
	for rows.Next() {
		n++
		if n == 1 {
			if vals, err = rows.Values(); err != nil {
				return credential{}, false, fmt.Errorf("%w: sql: %w", ErrUnavailable, err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return credential{}, false, fmt.Errorf("%w: sql: %w", ErrUnavailable, err)
	}
	switch {
	case n == 0:
		return credential{}, false, nil
	case n > 1:
		// Two members match (e.g. "Alice" and "alice" under lower()): neither
		// password may open the account.
		b.log.Warn("auth-sql-password-query returned several rows for one user; refusing it", "user", user, "rows", n)
		return credential{}, false, nil
	}
	c, err := parseCredential(b.cfg.Format, vals)
	if err != nil {
		b.log.Warn("auth-sql-password-query returned a row this format cannot use; refusing the user", "user", user, "err", err)
		return credential{}, false, nil
	}
	return c, true, nil
}

// text renders a column value as text (text, varchar, bytea, integers).
func text(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case int32:
		return strconv.FormatInt(int64(v), 10), true
	case int16:
		return strconv.FormatInt(int64(v), 10), true
	}
	return "", false
}

// parseCredential reads a query row in a password format.
func parseCredential(format string, vals []any) (credential, error) {
	if len(vals) == 0 {
		return credential{}, errors.New("no column")
	}
	first, ok := text(vals[0])
	if !ok {
		return credential{}, fmt.Errorf("first column is %T (null?), want text", vals[0])
	}
	switch format {
	case FormatPlain:
		return credential{plain: first}, nil
	case FormatBcrypt:
		if _, err := bcrypt.Cost([]byte(first)); err != nil {
			return credential{}, fmt.Errorf("not a bcrypt hash: %w", err)
		}
		return credential{plain: first, isHash: true}, nil
	}
	if len(vals) != 4 {
		return credential{}, fmt.Errorf("scram format: %d columns, want password, serverkey, salt, iterationcount", len(vals))
	}
	var cols [3]string
	for i := 1; i < 4; i++ {
		if cols[i-1], ok = text(vals[i]); !ok && vals[i] != nil {
			return credential{}, fmt.Errorf("column %d is %T", i+1, vals[i])
		}
	}
	if cols[0] == "" { // ejabberd keeps plain passwords in the same table
		return credential{plain: first}, nil
	}
	return parseSCRAM(first, cols[0], cols[1], cols[2])
}

// parseSCRAM reads ejabberd's stored SCRAM columns.
func parseSCRAM(stored, server, salt, iter string) (credential, error) {
	c := credential{scram: true, hash: "sha1"}
	switch {
	case strings.HasPrefix(stored, "sha256:"):
		c.hash, stored = "sha256", stored[len("sha256:"):]
	case strings.HasPrefix(stored, "sha512:"):
		c.hash, stored = "sha512", stored[len("sha512:"):]
	}
	var err error
	if c.keys.StoredKey, err = base64.StdEncoding.DecodeString(stored); err != nil {
		return credential{}, fmt.Errorf("storedkey: %w", err)
	}
	if c.keys.ServerKey, err = base64.StdEncoding.DecodeString(server); err != nil {
		return credential{}, fmt.Errorf("serverkey: %w", err)
	}
	if c.keys.Salt, err = base64.StdEncoding.DecodeString(salt); err != nil {
		return credential{}, fmt.Errorf("salt: %w", err)
	}
	if c.keys.Iterations, err = strconv.Atoi(iter); err != nil || c.keys.Iterations < 1 {
		return credential{}, fmt.Errorf("iterationcount %q", iter)
	}
	return c, nil
}

// hashOf is the hash constructor of an ejabberd SCRAM hash name.
func hashOf(name string) func() hash.Hash {
	switch name {
	case "sha256":
		return sha256.New
	case "sha512":
		return sha512.New
	}
	return sha1.New
}

// verify checks a plaintext password against a credential.
func (c credential) verify(password string) bool {
	switch {
	case c.scram:
		k, err := scramkey.DeriveHash(hashOf(c.hash), password, c.keys.Salt, c.keys.Iterations)
		if err != nil {
			return false
		}
		return subtle.ConstantTimeCompare(k.Stored, c.keys.StoredKey) == 1
	case c.isHash:
		return bcrypt.CompareHashAndPassword([]byte(c.plain), []byte(password)) == nil
	}
	return c.plain != "" && subtle.ConstantTimeCompare([]byte(c.plain), []byte(password)) == 1
}

func (b *sqlBackend) Check(ctx context.Context, user, password string) (bool, error) {
	c, ok, err := b.fetch(ctx, user)
	if err != nil || !ok {
		return false, err
	}
	return c.verify(password), nil
}

func (b *sqlBackend) Exists(ctx context.Context, user string) (bool, error) {
	_, ok, err := b.fetch(ctx, user)
	return ok, err
}

// SCRAMMechanisms: the scram format serves the mechanism of auth-scram-hash.
func (b *sqlBackend) SCRAMMechanisms() []string {
	if b.cfg.Format != FormatSCRAM {
		return nil
	}
	m, _ := scramHash(b.cfg.SCRAMHash)
	return []string{m}
}

func (b *sqlBackend) SCRAMKeys(ctx context.Context, mech, user string) (scram.Keys, bool, error) {
	c, ok, err := b.fetch(ctx, user)
	if err != nil || !ok {
		return scram.Keys{}, false, err
	}
	if !c.scram {
		// A plain password in a SCRAM table: derive keys for this exchange.
		k, err := scram.Derive(mech, c.plain, scram.DefaultIterations)
		return k, err == nil, err
	}
	want := map[string]string{scram.SHA1: "sha1", scram.SHA256: "sha256"}[mech]
	if c.hash != want {
		b.log.Warn("stored SCRAM keys are for another hash than the mechanism offered (auth-scram-hash); refusing the user",
			"user", user, "stored", c.hash, "mechanism", mech)
		return scram.Keys{}, false, nil
	}
	return c.keys, true, nil
}
