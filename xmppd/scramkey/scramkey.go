// Package scramkey is the one SCRAM key derivation (RFC 5802 §3, RFC 7677) that
// xmppd's server side (xmppd/internal/scram, which stores only StoredKey and
// ServerKey) and the benchmark's client side (bench/loadgen) share:
// SaltedPassword = PBKDF2(password, salt, i), ClientKey = HMAC(SaltedPassword,
// "Client Key"), StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword,
// "Server Key").
//
// It is public so that code outside xmppd can use it; it must not import any
// other xedge package.
package scramkey

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
)

// Mechanism names.
const (
	SHA1   = "SCRAM-SHA-1"
	SHA256 = "SCRAM-SHA-256"
)

// HashFor returns the hash constructor of a mechanism, or nil if unknown.
func HashFor(mech string) func() hash.Hash {
	switch mech {
	case SHA1:
		return sha1.New
	case SHA256:
		return sha256.New
	}
	return nil
}

// Keys are the keys derived from a password. Client is password-equivalent:
// a server keeps only Stored and Server.
type Keys struct {
	Client, Stored, Server []byte
}

// Derive computes the keys of password for mech with salt and iterations.
func Derive(mech, password string, salt []byte, iterations int) (Keys, error) {
	h := HashFor(mech)
	if h == nil {
		return Keys{}, fmt.Errorf("scram: unknown mechanism %q", mech)
	}
	return DeriveHash(h, password, salt, iterations)
}

// DeriveHash is Derive for a hash constructor rather than a mechanism name:
// credentials stored by another server with a hash no mechanism here offers
// (ejabberd's SCRAM-SHA-512 columns) are checked with the same derivation.
func DeriveHash(h func() hash.Hash, password string, salt []byte, iterations int) (Keys, error) {
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return Keys{}, fmt.Errorf("scram: pbkdf2: %w", err)
	}
	k := Keys{Client: HMAC(h, salted, "Client Key"), Server: HMAC(h, salted, "Server Key")}
	d := h()
	d.Write(k.Client)
	k.Stored = d.Sum(nil)
	return k, nil
}

// HMAC is HMAC(key, msg) with hash h (the proofs and signatures of the exchange).
func HMAC(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
