package loadgen

import "testing"

// Test vectors from RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256).
func TestScramVectors(t *testing.T) {
	cases := []struct {
		mech, cnonce, serverFirst, final, serverFinal string
	}{
		{
			ScramSHA1, "fyko+d2lbbFgONRv9qkxdawL",
			"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
			"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
			"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
		},
		{
			ScramSHA256, "rOprNGfwEbeRWgbNEkqO",
			"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
			"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		},
	}
	for _, c := range cases {
		t.Run(c.mech, func(t *testing.T) {
			for range 2 { // the second pass goes through the SaltedPassword cache
				s, err := NewScram(c.mech, "user", "pencil", c.cnonce)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := s.ClientFirst(), "n,,n=user,r="+c.cnonce; got != want {
					t.Fatalf("client-first = %q, want %q", got, want)
				}
				got, err := s.ClientFinal(c.serverFirst)
				if err != nil {
					t.Fatal(err)
				}
				if got != c.final {
					t.Fatalf("client-final = %q, want %q", got, c.final)
				}
				if err := s.Verify(c.serverFinal); err != nil {
					t.Fatal(err)
				}
				if err := s.Verify("v=AAAA"); err == nil {
					t.Fatal("wrong server signature accepted")
				}
			}
		})
	}
}

func TestScramRejectsBadServerFirst(t *testing.T) {
	bad := []string{
		"r=othernonce,s=QSXCR+Q6sek8bf92,i=4096",   // does not extend our nonce
		"r=abc,s=QSXCR+Q6sek8bf92,i=4096",          // equal to our nonce
		"r=abcdef,s=QSXCR+Q6sek8bf92,i=0",          // bad count
		"r=abcdef,s=!!!,i=4096",                    // bad salt
		"m=ext,r=abcdef,s=QSXCR+Q6sek8bf92,i=4096", // mandatory extension
	}
	for _, sf := range bad {
		s, _ := NewScram(ScramSHA1, "user", "pencil", "abc")
		s.ClientFirst()
		if _, err := s.ClientFinal(sf); err == nil {
			t.Errorf("accepted %q", sf)
		}
	}
	if _, err := NewScram("SCRAM-MD5", "u", "p", ""); err == nil {
		t.Error("unknown mechanism accepted")
	}
}

func TestEscapeName(t *testing.T) {
	if got := escapeName("a,b=c"); got != "a=2Cb=3Dc" {
		t.Fatalf("escapeName = %q", got)
	}
}
