package scramkey

import (
	"encoding/base64"
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
