package loadgen

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"

	"xedge/xmppd/scramkey"
)

// SCRAM mechanism names.
const (
	ScramSHA1   = scramkey.SHA1
	ScramSHA256 = scramkey.SHA256
)

// ErrServerSignature means the server's final message did not prove it knows the key.
var ErrServerSignature = errors.New("scram: server signature mismatch")

// saltedCache keeps the keys derived from SaltedPassword (ClientKey, StoredKey,
// ServerKey) per (mechanism, password, salt, iterations): a real client caches
// them too (RFC 5802 §5.1 suggests it), and without the cache PBKDF2 (4096 rounds
// per login) would make the load generator, not the server, the bottleneck of the
// login test. Each exchange still computes its proof and verifies the server's
// signature (two HMACs over its own AuthMessage).
var saltedCache sync.Map

// Scram is the client side of one SCRAM exchange (RFC 5802 / RFC 7677), without
// channel binding (gs2 header "n,,").
type Scram struct {
	mech        string
	newHash     func() hash.Hash
	user, pass  string
	cnonce      string
	clientFirst string // client-first-message-bare
	serverSig   []byte
}

// NewScram starts an exchange for mech (ScramSHA1 or ScramSHA256). An empty nonce
// draws a random one.
func NewScram(mech, user, pass, nonce string) (*Scram, error) {
	s := &Scram{mech: mech, user: user, pass: pass, cnonce: nonce, newHash: scramkey.HashFor(mech)}
	if s.newHash == nil {
		return nil, fmt.Errorf("scram: unsupported mechanism %q", mech)
	}
	if s.cnonce == "" {
		var b [18]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("scram: nonce: %w", err)
		}
		s.cnonce = base64.RawStdEncoding.EncodeToString(b[:])
	}
	return s, nil
}

func escapeName(u string) string {
	if !strings.ContainsAny(u, ",=") {
		return u
	}
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(u)
}

// ClientFirst returns the client-first-message (with gs2 header).
func (s *Scram) ClientFirst() string {
	s.clientFirst = "n=" + escapeName(s.user) + ",r=" + s.cnonce
	return "n,," + s.clientFirst
}

// ClientFinal answers the server-first-message with the client-final-message.
func (s *Scram) ClientFinal(serverFirst string) (string, error) {
	var nonce, salt64 string
	iter := 0
	for _, f := range strings.Split(serverFirst, ",") {
		if len(f) < 2 || f[1] != '=' {
			continue
		}
		switch f[0] {
		case 'r':
			nonce = f[2:]
		case 's':
			salt64 = f[2:]
		case 'i':
			n, err := strconv.Atoi(f[2:])
			if err != nil {
				return "", fmt.Errorf("scram: bad iteration count: %w", err)
			}
			iter = n
		case 'm':
			return "", errors.New("scram: unsupported mandatory extension")
		}
	}
	if !strings.HasPrefix(nonce, s.cnonce) || len(nonce) == len(s.cnonce) {
		return "", errors.New("scram: server nonce does not extend client nonce")
	}
	if iter < 1 || iter > 1_000_000 {
		return "", fmt.Errorf("scram: iteration count %d out of range", iter)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return "", fmt.Errorf("scram: bad salt: %w", err)
	}
	keys, err := s.keys(salt, iter)
	if err != nil {
		return "", err
	}
	clientKey, storedKey, serverKey := keys.Client, keys.Stored, keys.Server
	withoutProof := "c=biws,r=" + nonce
	authMessage := s.clientFirst + "," + serverFirst + "," + withoutProof
	sig := s.hmac(storedKey, authMessage)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	s.serverSig = s.hmac(serverKey, authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

// Verify checks the server-final-message ("v=...").
func (s *Scram) Verify(serverFinal string) error {
	if strings.HasPrefix(serverFinal, "e=") {
		return fmt.Errorf("scram: server error %q", serverFinal[2:])
	}
	v, ok := strings.CutPrefix(serverFinal, "v=")
	if !ok {
		return fmt.Errorf("scram: bad server-final-message %q", serverFinal)
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return fmt.Errorf("scram: bad server signature: %w", err)
	}
	if s.serverSig == nil || subtle.ConstantTimeCompare(got, s.serverSig) != 1 {
		return ErrServerSignature
	}
	return nil
}

func (s *Scram) hmac(key []byte, msg string) []byte { return scramkey.HMAC(s.newHash, key, msg) }

// keys derives (once per mechanism, password, salt and iteration count: see
// saltedCache) with the derivation xmppd's server side uses.
func (s *Scram) keys(salt []byte, iter int) (scramkey.Keys, error) {
	key := s.mech + "\x00" + s.pass + "\x00" + string(salt) + "\x00" + strconv.Itoa(iter)
	if v, ok := saltedCache.Load(key); ok {
		return v.(scramkey.Keys), nil
	}
	k, err := scramkey.Derive(s.mech, s.pass, salt, iter)
	if err != nil {
		return scramkey.Keys{}, err
	}
	saltedCache.Store(key, k)
	return k, nil
}
