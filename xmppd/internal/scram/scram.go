// Package scram implements the server side of SASL SCRAM (RFC 5802, RFC 7677) for
// SCRAM-SHA-1 and SCRAM-SHA-256 without channel binding, working from stored keys
// only (salt, iteration count, StoredKey, ServerKey) so the server never holds a
// password or a password-equivalent SaltedPassword.
//
// mellium.im/sasl's server side asks for the SaltedPassword, which is
// password-equivalent (ClientKey derives from it), so xmppd does the server side here
// with crypto/hmac and crypto/pbkdf2 instead.
//
// It owns SCRAM message parsing and verification; it must not import other xmppd
// packages but scramkey (the key derivation it shares with bench/loadgen).
package scram

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"xedge/xmppd/scramkey"
)

// Mechanism names.
const (
	SHA1   = scramkey.SHA1
	SHA256 = scramkey.SHA256
)

// DefaultIterations is the PBKDF2 iteration count for new credentials.
const DefaultIterations = 4096

// Errors map to SASL failure conditions: ErrMalformed -> malformed-request,
// ErrNotAuthorized -> not-authorized.
var (
	ErrMalformed     = errors.New("scram: malformed message")
	ErrNotAuthorized = errors.New("scram: not authorized")
)

// Keys are the stored credentials for one hash.
type Keys struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iter"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// HashFor returns the hash constructor for a mechanism name, or nil.
func HashFor(mech string) func() hash.Hash { return scramkey.HashFor(mech) }

// Derive computes Keys for password with a fresh random salt.
func Derive(mech, password string, iterations int) (Keys, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Keys{}, fmt.Errorf("scram: salt: %w", err)
	}
	return DeriveWithSalt(mech, password, salt, iterations)
}

// DeriveWithSalt computes Keys for password with the given salt (the
// derivation is scramkey's, shared with the load generator's client side).
func DeriveWithSalt(mech, password string, salt []byte, iterations int) (Keys, error) {
	k, err := scramkey.Derive(mech, password, salt, iterations)
	if err != nil {
		return Keys{}, err
	}
	return Keys{Salt: salt, Iterations: iterations, StoredKey: k.Stored, ServerKey: k.Server}, nil
}

// Verify reports whether password matches k (used for SASL PLAIN).
func (k Keys) Verify(mech, password string) bool {
	got, err := DeriveWithSalt(mech, password, k.Salt, k.Iterations)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got.StoredKey, k.StoredKey) == 1
}

func mac(h func() hash.Hash, key []byte, msg string) []byte { return scramkey.HMAC(h, key, msg) }

// ClientFirst is a parsed client-first-message.
type ClientFirst struct {
	GS2Header string // "n,," or "y,," (or "p=tls-exporter,,"); authzid is carried separately
	CBName    string // the channel binding type of a "p=" header
	AuthzID   string
	Username  string // saslname unescaped
	Nonce     string
	Bare      string // client-first-message-bare
}

// ParseClientFirst parses a client-first-message. Channel binding ("p=") is refused.
func ParseClientFirst(msg []byte) (*ClientFirst, error) { return parseClientFirst(msg, false) }

// parseClientFirst parses a client-first-message; with plus, channel binding
// ("p=NAME") is accepted and its name kept in CBName.
func parseClientFirst(msg []byte, plus bool) (*ClientFirst, error) {
	s := string(msg)
	if len(s) < 3 {
		return nil, fmt.Errorf("%w: too short", ErrMalformed)
	}
	var cf ClientFirst
	switch s[0] {
	case 'n', 'y':
		if s[1] != ',' {
			return nil, fmt.Errorf("%w: gs2 flag", ErrMalformed)
		}
	case 'p':
		if !plus {
			return nil, fmt.Errorf("%w: channel binding not supported", ErrMalformed)
		}
		j := strings.IndexByte(s, ',')
		if j < 3 || s[1] != '=' {
			return nil, fmt.Errorf("%w: gs2 flag", ErrMalformed)
		}
		cf.CBName = s[2:j]
		s = "p," + s[j+1:] // parsed below like the other flags; GS2Header is set from msg
	default:
		return nil, fmt.Errorf("%w: gs2 flag", ErrMalformed)
	}
	rest := s[2:]
	i := strings.IndexByte(rest, ',')
	if i < 0 {
		return nil, fmt.Errorf("%w: gs2 header", ErrMalformed)
	}
	if a := rest[:i]; a != "" {
		if !strings.HasPrefix(a, "a=") {
			return nil, fmt.Errorf("%w: authzid", ErrMalformed)
		}
		z, ok := unescape(a[2:])
		if !ok {
			return nil, fmt.Errorf("%w: authzid escape", ErrMalformed)
		}
		cf.AuthzID = z
	}
	cf.Bare = rest[i+1:]
	cf.GS2Header = string(msg[:len(msg)-len(cf.Bare)])
	parts := strings.Split(cf.Bare, ",")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%w: bare message", ErrMalformed)
	}
	if strings.HasPrefix(parts[0], "m=") {
		return nil, fmt.Errorf("%w: mandatory extension not supported", ErrMalformed)
	}
	if !strings.HasPrefix(parts[0], "n=") || !strings.HasPrefix(parts[1], "r=") {
		return nil, fmt.Errorf("%w: expected n= and r=", ErrMalformed)
	}
	u, ok := unescape(parts[0][2:])
	if !ok || u == "" {
		return nil, fmt.Errorf("%w: username", ErrMalformed)
	}
	cf.Username = u
	cf.Nonce = parts[1][2:]
	if cf.Nonce == "" || !printable(cf.Nonce) {
		return nil, fmt.Errorf("%w: nonce", ErrMalformed)
	}
	return &cf, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

func unescape(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, !strings.Contains(s, ",")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			return "", false
		}
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// ClientFinal is a parsed client-final-message.
type ClientFinal struct {
	ChannelBinding string // c= value, base64
	Nonce          string
	Proof          []byte
	WithoutProof   string
}

// ParseClientFinal parses a client-final-message.
func ParseClientFinal(msg []byte) (*ClientFinal, error) {
	s := string(msg)
	i := strings.LastIndex(s, ",p=")
	if i < 0 {
		return nil, fmt.Errorf("%w: no proof", ErrMalformed)
	}
	var cf ClientFinal
	cf.WithoutProof = s[:i]
	proof, err := base64.StdEncoding.DecodeString(s[i+3:])
	if err != nil || len(proof) == 0 {
		return nil, fmt.Errorf("%w: proof", ErrMalformed)
	}
	cf.Proof = proof
	parts := strings.Split(cf.WithoutProof, ",")
	if len(parts) < 2 || !strings.HasPrefix(parts[0], "c=") || !strings.HasPrefix(parts[1], "r=") {
		return nil, fmt.Errorf("%w: expected c= and r=", ErrMalformed)
	}
	cf.ChannelBinding = parts[0][2:]
	cf.Nonce = parts[1][2:]
	return &cf, nil
}

// Lookup returns the stored keys for a user of a mechanism; ok false if no such user.
type Lookup func(user string) (k Keys, ok bool, err error)

// Server is one server-side SCRAM exchange. Use it for exactly one authentication.
type Server struct {
	mech   string
	h      func() hash.Hash
	lookup Lookup
	plus   bool    // a -PLUS mechanism: the client must bind to cb.Data
	cb     Binding // the connection's channel binding

	step        int
	first       *ClientFirst
	keys        Keys
	known       bool
	nonce       string
	serverFirst string
	user        string
}

// Channel binding (RFC 5802 §6, RFC 9266): the -PLUS mechanisms and the one
// binding type supported, tls-exporter (32 bytes of the TLS exporter with label
// "EXPORTER-Channel-Binding" and no context).
const (
	SHA1Plus    = SHA1 + "-PLUS"
	SHA256Plus  = SHA256 + "-PLUS"
	TLSExporter = "tls-exporter"
)

// Binding is a connection's channel binding for an exchange.
type Binding struct {
	Data    []byte // the tls-exporter value of the connection (nil: none)
	Offered bool   // -PLUS mechanisms were offered on this stream
}

// NewServerBinding starts an exchange for mech, which may be a -PLUS
// mechanism (then b.Data must be set); b.Offered makes a client's "y" flag a
// failed authentication.
func NewServerBinding(mech string, lookup Lookup, b Binding) (*Server, error) {
	base, plus := strings.CutSuffix(mech, "-PLUS")
	if plus && len(b.Data) == 0 {
		return nil, fmt.Errorf("scram: %s without channel binding data", mech)
	}
	s, err := NewServer(base, lookup)
	if err != nil {
		return nil, err
	}
	s.mech, s.plus, s.cb = mech, plus, b
	return s, nil
}

// NewServer starts an exchange for mech (SHA1 or SHA256).
func NewServer(mech string, lookup Lookup) (*Server, error) {
	h := HashFor(mech)
	if h == nil {
		return nil, fmt.Errorf("scram: unknown mechanism %q", mech)
	}
	return &Server{mech: mech, h: h, lookup: lookup}, nil
}

// Username is the authenticated user after Step returned done with no error.
func (s *Server) Username() string { return s.user }

// AuthzID is the authorization identity the client asked for ("" if none).
func (s *Server) AuthzID() string {
	if s.first == nil {
		return ""
	}
	return s.first.AuthzID
}

// AttemptedUser is the username the client gave in its first message ("" before).
func (s *Server) AttemptedUser() string {
	if s.first == nil {
		return ""
	}
	return s.first.Username
}

// Step consumes a client message and returns the server's reply. done is true after
// the server-final-message (err nil: authenticated). An unknown user is handled like
// a wrong password (a fake salt is served) so user existence does not leak.
func (s *Server) Step(in []byte) (out []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		cf, err := parseClientFirst(in, s.plus)
		if err != nil {
			return nil, true, err
		}
		switch {
		case s.plus && cf.CBName != TLSExporter:
			return nil, true, fmt.Errorf("%w: %s needs channel binding type %s", ErrMalformed, s.mech, TLSExporter)
		case !s.plus && cf.GS2Header[0] == 'y' && s.cb.Offered:
			// RFC 5802 §6: the client supports channel binding and believes
			// the server does not, yet -PLUS was offered: a downgrade.
			return nil, true, fmt.Errorf("%w: channel binding downgrade (y flag while -PLUS was offered)", ErrNotAuthorized)
		}
		s.first = cf
		k, ok, err := s.lookup(cf.Username)
		if err != nil {
			return nil, true, fmt.Errorf("scram: lookup: %w", err)
		}
		if !ok {
			k = Keys{Salt: fakeSalt(cf.Username), Iterations: DefaultIterations}
		}
		s.keys, s.known = k, ok
		nb := make([]byte, 18)
		if _, err := rand.Read(nb); err != nil {
			return nil, true, fmt.Errorf("scram: nonce: %w", err)
		}
		s.nonce = cf.Nonce + base64.RawStdEncoding.EncodeToString(nb)
		s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(k.Salt) + ",i=" + strconv.Itoa(k.Iterations)
		return []byte(s.serverFirst), false, nil
	case 1:
		s.step = 2
		cf, err := ParseClientFinal(in)
		if err != nil {
			return nil, true, err
		}
		cb, err := base64.StdEncoding.DecodeString(cf.ChannelBinding)
		want := s.first.GS2Header
		if s.plus {
			want += string(s.cb.Data)
		}
		if err != nil || subtle.ConstantTimeCompare(cb, []byte(want)) != 1 {
			return nil, true, fmt.Errorf("%w: channel binding mismatch", ErrMalformed)
		}
		if cf.Nonce != s.nonce {
			return nil, true, fmt.Errorf("%w: nonce mismatch", ErrNotAuthorized)
		}
		if !s.known || len(cf.Proof) != s.h().Size() {
			return nil, true, ErrNotAuthorized
		}
		authMsg := s.first.Bare + "," + s.serverFirst + "," + cf.WithoutProof
		sig := mac(s.h, s.keys.StoredKey, authMsg)
		clientKey := make([]byte, len(sig))
		for i := range sig {
			clientKey[i] = sig[i] ^ cf.Proof[i]
		}
		hk := s.h()
		hk.Write(clientKey)
		if subtle.ConstantTimeCompare(hk.Sum(nil), s.keys.StoredKey) != 1 {
			return nil, true, ErrNotAuthorized
		}
		s.user = s.first.Username
		return []byte("v=" + base64.StdEncoding.EncodeToString(mac(s.h, s.keys.ServerKey, authMsg))), true, nil
	}
	return nil, true, fmt.Errorf("%w: exchange already finished", ErrMalformed)
}

var fakeKey = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

func fakeSalt(user string) []byte {
	return mac(sha256.New, fakeKey, user)[:16]
}
