package loadgen

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestVerifierPinsAfterOneFullCheck logs in over STARTTLS to the mini server: the
// certificate chain is verified once, later handshakes match the pinned leaf; a
// verifier trusting another certificate refuses the server.
func TestVerifierPinsAfterOneFullCheck(t *testing.T) {
	s, err := startMiniServer("localhost")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	v, err := NewVerifier(s.certPEM, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := Options{Addr: s.ln.Addr().String(), Domain: "localhost", StartTLS: true, Verifier: v, Timeout: 10 * time.Second}
	if err := loginLoop(ctx, opts, 6, 3); err != nil {
		t.Fatal(err)
	}
	if v.FullVerifications() != 1 || v.Accepted() != 6 {
		t.Errorf("full verifications %d (want 1), accepted %d (want 6)", v.FullVerifications(), v.Accepted())
	}

	_, otherPEM, err := testCert("localhost")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewVerifier(otherPEM, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	opts.Verifier = other
	if _, err := Login(ctx, opts, "u1", "pw1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted server certificate: err = %v", err)
	}
	wrongHost, err := NewVerifier(s.certPEM, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	opts.Verifier = wrongHost
	if _, err := Login(ctx, opts, "u1", "pw1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("certificate for another host: err = %v", err)
	}
	if other.Accepted() != 0 || wrongHost.Accepted() != 0 {
		t.Error("a refused certificate was counted as accepted")
	}
}
