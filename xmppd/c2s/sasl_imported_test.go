package c2s

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/internal/testenv"

	"mellium.im/sasl"
)

// An account imported with SCRAM-SHA-1 keys only (ejabberd's and Prosody's
// exports) fails SCRAM-SHA-256, and the client falls back to SCRAM-SHA-1. Those
// failures are not guesses: more of them than AuthFailMax from one address
// leave the next login unthrottled, while wrong passwords still count.
func TestSHA1OnlyAccountFallbackIsNotThrottled(t *testing.T) {
	e := start(t, func(c *Config) { c.AuthFailMax = 2 })
	k, err := scram.Derive(scram.SHA1, "secret", 4096)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(accounts.Record{SHA1: k})
	if err := e.store.Apply(context.Background(), storage.Put(accounts.Table, "imported", b)); err != nil {
		t.Fatal(err)
	}
	login := func(m sasl.Mechanism, user, pw string) string {
		c := testenv.Dial(t, e.addr)
		c.StartTLS("localhost")
		return scramAs(t, c, m, user, pw)
	}
	for i := range 4 { // twice AuthFailMax
		if got := login(sasl.ScramSha256, "imported", "secret"); !strings.Contains(got, "not-authorized") {
			t.Fatalf("SCRAM-SHA-256 of a SHA-1-only account (try %d): %s", i, got)
		}
	}
	if got := login(sasl.ScramSha1, "imported", "secret"); got != "success" {
		t.Fatalf("SCRAM-SHA-1 after the fallbacks: %s", got)
	}
	// Wrong passwords still count: the third attempt is throttled.
	for range 2 {
		if got := login(sasl.ScramSha1, "imported", "wrong"); !strings.Contains(got, "not-authorized") {
			t.Fatalf("wrong password: %s", got)
		}
	}
	if got := login(sasl.ScramSha1, "imported", "secret"); !strings.Contains(got, "temporary-auth-failure") {
		t.Fatalf("after AuthFailMax wrong passwords: %s, want temporary-auth-failure", got)
	}
}
