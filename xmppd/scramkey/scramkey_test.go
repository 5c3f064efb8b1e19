package scramkey

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"testing"
)

// RFC 7677 §3 and RFC 5802 §5 test vectors: user "user", password "pencil".
func TestRFCVectors(t *testing.T) {
	for _, tc := range []struct {
		mech, salt string
		iter       int
		proofMsg   string
		serverSig  string
	}{
		{SHA1, "QSXCR+Q6sek8bf92", 4096,
			"n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
			"rmF9pqV8S7suAoZWja4dJRkFsKQ="},
		{SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==", 4096,
			"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
			"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
	} {
		salt, _ := base64.StdEncoding.DecodeString(tc.salt)
		k, err := Derive(tc.mech, "pencil", salt, tc.iter)
		if err != nil {
			t.Fatal(err)
		}
		if got := base64.StdEncoding.EncodeToString(HMAC(HashFor(tc.mech), k.Server, tc.proofMsg)); got != tc.serverSig {
			t.Errorf("%s: server signature %s, want %s", tc.mech, got, tc.serverSig)
		}
	}
	if _, err := Derive("SCRAM-MD5", "x", []byte("s"), 1); err == nil {
		t.Error("unknown mechanism accepted")
	}
}

// DeriveHash is Derive's derivation for any hash: SHA-1 and SHA-256 give
// Derive's keys, SHA-512 keys of SHA-512's size with StoredKey = H(ClientKey).
func TestDeriveHash(t *testing.T) {
	salt := []byte("0123456789abcdef")
	for mech, h := range map[string]func() hash.Hash{SHA1: sha1.New, SHA256: sha256.New} {
		a, err := Derive(mech, "pencil", salt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		b, err := DeriveHash(h, "pencil", salt, 4096)
		if err != nil || !bytes.Equal(a.Client, b.Client) || !bytes.Equal(a.Stored, b.Stored) || !bytes.Equal(a.Server, b.Server) {
			t.Fatalf("%s: DeriveHash differs from Derive (%v)", mech, err)
		}
	}
	k, err := DeriveHash(sha512.New, "pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(k.Client)
	if len(k.Client) != 64 || len(k.Server) != 64 || !bytes.Equal(k.Stored, sum[:]) {
		t.Fatalf("sha512 keys: %d/%d bytes, stored = H(client) %v", len(k.Client), len(k.Server), bytes.Equal(k.Stored, sum[:]))
	}
}
