package scram

import (
	"errors"
	"testing"

	"mellium.im/sasl"
)

func run(t *testing.T, mech string, m sasl.Mechanism, stored, given string) error {
	t.Helper()
	k, err := Derive(mech, stored, 4096)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(mech, func(u string) (Keys, bool, error) { return k, u == "alice", nil })
	if err != nil {
		t.Fatal(err)
	}
	c := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte("alice"), []byte(given), nil }))
	_, cfirst, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	sfirst, done, err := srv.Step(cfirst)
	if err != nil || done {
		t.Fatalf("server first: %v %v", done, err)
	}
	_, cfinal, err := c.Step(sfirst)
	if err != nil {
		t.Fatal(err)
	}
	sfinal, done, err := srv.Step(cfinal)
	if !done {
		t.Fatal("not done")
	}
	if err != nil {
		return err
	}
	if _, _, err := c.Step(sfinal); err != nil {
		t.Fatalf("client rejects server signature: %v", err)
	}
	if srv.Username() != "alice" {
		t.Fatalf("user %q", srv.Username())
	}
	return nil
}

func TestSCRAMWithMelliumClient(t *testing.T) {
	for _, tc := range []struct {
		mech string
		m    sasl.Mechanism
	}{{SHA1, sasl.ScramSha1}, {SHA256, sasl.ScramSha256}} {
		if err := run(t, tc.mech, tc.m, "secret", "secret"); err != nil {
			t.Fatalf("%s good password: %v", tc.mech, err)
		}
		if err := run(t, tc.mech, tc.m, "secret", "wrong"); !errors.Is(err, ErrNotAuthorized) {
			t.Fatalf("%s wrong password: %v", tc.mech, err)
		}
	}
}

// RFC 7677 §3 test vector for SCRAM-SHA-256 (user "user", password "pencil").
func TestRFC7677Vector(t *testing.T) {
	salt := []byte{0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81}
	k, err := DeriveWithSalt(SHA256, "pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Verify(SHA256, "pencil") || k.Verify(SHA256, "pencil2") {
		t.Fatal("verify")
	}
	srv, _ := NewServer(SHA256, func(string) (Keys, bool, error) { return k, true, nil })
	srv.Step([]byte("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
	// Force the RFC's server nonce so the vector's proof applies.
	srv.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	srv.serverFirst = "r=" + srv.nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	out, done, err := srv.Step([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	if err != nil || !done {
		t.Fatalf("%v %v", done, err)
	}
	if string(out) != "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Fatalf("server final %s", out)
	}
}

func TestParseClientFirstRejects(t *testing.T) {
	for _, s := range []string{"", "n", "x,,n=a,r=b", "p=tls-unique,,n=a,r=b", "n,,m=x,n=a,r=b", "n,,n=,r=b", "n,,n=a=2X,r=b", "n,,n=a", "n,,r=b,n=a", "n,z,n=a,r=b"} {
		if _, err := ParseClientFirst([]byte(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", s, err)
		}
	}
	cf, err := ParseClientFirst([]byte("n,a=bob,n=a=2Cb=3Dc,r=xyz"))
	if err != nil || cf.Username != "a,b=c" || cf.AuthzID != "bob" || cf.GS2Header != "n,a=bob," {
		t.Fatalf("%+v %v", cf, err)
	}
}

func FuzzSCRAMClientFirst(f *testing.F) {
	for _, s := range []string{"n,,n=user,r=abc", "y,,n=u,r=x", "n,a=z,n=u=2C,r=q,e=x", "p=x,,n=u,r=a"} {
		f.Add([]byte(s))
	}
	k, _ := DeriveWithSalt(SHA1, "p", []byte("salt"), 16)
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := ParseClientFirst(b)
		if err == nil && (cf.Username == "" || cf.Nonce == "") {
			t.Fatalf("accepted empty fields: %q", b)
		}
		srv, _ := NewServer(SHA1, func(string) (Keys, bool, error) { return k, true, nil })
		out, done, err := srv.Step(b)
		if err == nil && (done || len(out) == 0) {
			t.Fatalf("bad first step for %q", b)
		}
	})
}

func FuzzSCRAMClientFinal(f *testing.F) {
	f.Add([]byte("c=biws,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	f.Add([]byte("c=biws,r=abc,p="))
	f.Add([]byte(",p=AAAA"))
	k, _ := DeriveWithSalt(SHA256, "p", []byte("salt"), 16)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseClientFinal(b)
		srv, _ := NewServer(SHA256, func(string) (Keys, bool, error) { return k, true, nil })
		if _, _, err := srv.Step([]byte("n,,n=user,r=abc")); err != nil {
			t.Fatal(err)
		}
		if _, done, err := srv.Step(b); err == nil || !done {
			t.Fatalf("accepted forged final %q", b)
		}
	})
}
