package config

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// AuthConfig holds the settings of the authentication backend (xmppd/auth), in
// ejabberd's vocabulary: auth_method internal, external, sql or ldap (YAML keys
// may be written with underscores, as in ejabberd.yml). It is self-contained so
// that a per-domain section can carry one of its own.
type AuthConfig struct {
	Method         string        // auth-method: internal, external, sql or ldap
	CacheTime      time.Duration // auth-cache-time: how long "user exists" answers of other backends are kept
	Timeout        time.Duration // auth-backend-timeout: bound of one backend request
	PasswordFormat string        // auth-password-format (sql): plain, scram or bcrypt
	SCRAMHash      string        // auth-scram-hash (sql, scram format): sha1 or sha256
	ChannelBinding string        // sasl-channel-binding: none or tls-exporter (SCRAM-SHA-*-PLUS, RFC 9266)

	ExtauthProgram  string        // extauth-program: the script's command line
	ExtauthPoolSize int           // extauth-pool-size: scripts run at once
	ExtauthTimeout  time.Duration // extauth-timeout: bound of one request (0: auth-backend-timeout)

	SQLURL           string // auth-sql-url: PostgreSQL connection string (pgx)
	SQLPasswordQuery string // auth-sql-password-query: $1 the username, $2 the domain
	SQLPoolSize      int    // auth-sql-pool-size

	LDAPServers   StringList // ldap-servers
	LDAPPort      int        // ldap-port (0: 389, or 636 with ldap-encrypt tls)
	LDAPEncrypt   string     // ldap-encrypt: none, tls or starttls
	LDAPTLSVerify bool       // ldap-tls-verify
	LDAPCAFile    string     // ldap-tls-cacertfile
	LDAPRootDN    string     // ldap-rootdn
	LDAPPassword  string     // ldap-password
	LDAPBase      string     // ldap-base
	LDAPUIDs      StringList // ldap-uids
	LDAPFilter    string     // ldap-filter
}

// StringList is a list setting: "a,b" as a flag, a YAML list or string in a file.
type StringList []string

// String implements flag.Value.
func (l *StringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set implements flag.Value; a YAML list arrives printed as [a b].
func (l *StringList) Set(v string) error {
	v = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "["), "]")
	var out []string
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, s)
	}
	*l = out
	return nil
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.Auth = AuthConfig{Method: "internal", CacheTime: time.Minute, Timeout: 5 * time.Second,
				PasswordFormat: "plain", SCRAMHash: "sha1", ChannelBinding: "none", ExtauthPoolSize: runtime.NumCPU(), SQLPoolSize: 4,
				LDAPEncrypt: "none", LDAPTLSVerify: true, LDAPUIDs: StringList{"uid"}}
		},
		flags: func(c *Config, fs *flag.FlagSet) { c.Auth.bindFlags(fs) },
		check: func(c *Config) []error { return c.Auth.check() },
	})
}

// bindFlags binds a's keys (also those of a host_config section) to fs.
func (a *AuthConfig) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.Method, "auth-method", a.Method, "authentication backend: internal (SCRAM keys in the users table), external (ejabberd extauth script), sql (PostgreSQL query) or ldap (bind as the user)")
	fs.DurationVar(&a.CacheTime, "auth-cache-time", a.CacheTime, "keep the answers of external, sql and ldap to 'does this user exist' this long (0: ask every time)")
	fs.DurationVar(&a.Timeout, "auth-backend-timeout", a.Timeout, "bound of one request to the authentication backend; past it the client gets temporary-auth-failure")
	fs.StringVar(&a.PasswordFormat, "auth-password-format", a.PasswordFormat, "auth-method sql: how the query's password is stored: plain, scram (ejabberd's columns password, serverkey, salt, iterationcount) or bcrypt")
	fs.StringVar(&a.SCRAMHash, "auth-scram-hash", a.SCRAMHash, "auth-method sql with scram: the hash of the stored keys, sha1 or sha256 (SCRAM-SHA-1 or SCRAM-SHA-256 is offered)")
	fs.StringVar(&a.ChannelBinding, "sasl-channel-binding", a.ChannelBinding, "tls-exporter: offer SCRAM-SHA-*-PLUS with RFC 9266 channel binding (XEP-0440) where SCRAM keys are stored; none (default): slixmpp 1.8 and other tls-unique-only clients fail against -PLUS")
	fs.StringVar(&a.ExtauthProgram, "extauth-program", a.ExtauthProgram, "auth-method external: the extauth script's command line (ejabberd's protocol; split on blanks)")
	fs.IntVar(&a.ExtauthPoolSize, "extauth-pool-size", a.ExtauthPoolSize, "auth-method external: how many script processes run, each serving one request at a time")
	fs.DurationVar(&a.ExtauthTimeout, "extauth-timeout", a.ExtauthTimeout, "auth-method external: bound of one script request (0: auth-backend-timeout); a script that misses it is restarted")
	fs.StringVar(&a.SQLURL, "auth-sql-url", a.SQLURL, "auth-method sql: PostgreSQL connection string, postgres://USER:PASSWORD@HOST:PORT/DB or key=value form (PGPASSFILE works)")
	fs.StringVar(&a.SQLPasswordQuery, "auth-sql-password-query", a.SQLPasswordQuery, "auth-method sql: query returning the user's password ($1: username, $2: domain), e.g. select password from member where lower(username)=$1")
	fs.IntVar(&a.SQLPoolSize, "auth-sql-pool-size", a.SQLPoolSize, "auth-method sql: database connections at most")
	fs.Var(&a.LDAPServers, "ldap-servers", "auth-method ldap: comma-separated LDAP servers, tried in order")
	fs.IntVar(&a.LDAPPort, "ldap-port", a.LDAPPort, "auth-method ldap: port (0: 389, or 636 with ldap-encrypt tls)")
	fs.StringVar(&a.LDAPEncrypt, "ldap-encrypt", a.LDAPEncrypt, "auth-method ldap: none, tls (LDAPS) or starttls")
	fs.BoolVar(&a.LDAPTLSVerify, "ldap-tls-verify", a.LDAPTLSVerify, "auth-method ldap: verify the server's certificate")
	fs.StringVar(&a.LDAPCAFile, "ldap-tls-cacertfile", a.LDAPCAFile, "auth-method ldap: CA certificates (PEM) for ldap-tls-verify (default: the system's)")
	fs.StringVar(&a.LDAPRootDN, "ldap-rootdn", a.LDAPRootDN, "auth-method ldap: DN to bind as for searching users (empty: anonymous)")
	fs.StringVar(&a.LDAPPassword, "ldap-password", a.LDAPPassword, "auth-method ldap: password of ldap-rootdn")
	fs.StringVar(&a.LDAPBase, "ldap-base", a.LDAPBase, "auth-method ldap: base DN under which users are searched")
	fs.Var(&a.LDAPUIDs, "ldap-uids", "auth-method ldap: comma-separated attributes holding the username (default uid)")
	fs.StringVar(&a.LDAPFilter, "ldap-filter", a.LDAPFilter, "auth-method ldap: extra filter the user's entry must match, e.g. (objectClass=inetOrgPerson)")
}

// check validates a (the global setting or a host's).
func (a AuthConfig) check() []error {
	var errs []error
	switch a.Method {
	case "internal":
	case "external":
		if strings.TrimSpace(a.ExtauthProgram) == "" {
			errs = append(errs, errors.New("auth-method external needs extauth-program"))
		}
		if a.ExtauthPoolSize < 1 {
			errs = append(errs, fmt.Errorf("extauth-pool-size %d: want at least 1", a.ExtauthPoolSize))
		}
	case "sql":
		if a.SQLURL == "" || a.SQLPasswordQuery == "" {
			errs = append(errs, errors.New("auth-method sql needs auth-sql-url and auth-sql-password-query"))
		}
		switch a.PasswordFormat {
		case "plain", "scram", "bcrypt":
		default:
			errs = append(errs, fmt.Errorf("auth-password-format %q: want plain, scram or bcrypt", a.PasswordFormat))
		}
		switch a.SCRAMHash {
		case "sha", "sha1", "sha256":
		default:
			errs = append(errs, fmt.Errorf("auth-scram-hash %q: want sha1 or sha256", a.SCRAMHash))
		}
	case "ldap":
		if len(a.LDAPServers) == 0 || a.LDAPBase == "" {
			errs = append(errs, errors.New("auth-method ldap needs ldap-servers and ldap-base"))
		}
		switch a.LDAPEncrypt {
		case "none", "tls", "starttls":
		default:
			errs = append(errs, fmt.Errorf("ldap-encrypt %q: want none, tls or starttls", a.LDAPEncrypt))
		}
	default:
		errs = append(errs, fmt.Errorf("auth-method %q: want internal, external, sql or ldap", a.Method))
	}
	if a.ChannelBinding != "none" && a.ChannelBinding != "tls-exporter" {
		errs = append(errs, fmt.Errorf("sasl-channel-binding %q: want none or tls-exporter", a.ChannelBinding))
	}
	if a.Timeout <= 0 || a.CacheTime < 0 {
		errs = append(errs, errors.New("auth-backend-timeout must be positive and auth-cache-time not negative"))
	}
	return errs
}
