package webadmin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/metrics"
)

func testHandler(secure bool, admins ...string) *Handler {
	return New(Options{
		Domain: "example.org", Node: "n1", Version: "test", Admins: admins, Secure: secure,
		Check: func(user, pass string) (string, bool, error) {
			if user == "broken" {
				return "", false, errors.New("store down")
			}
			return strings.ToLower(user), pass == "pw-"+strings.ToLower(user), nil
		},
		Commands: func() []string { return []string{"status", "sessions", "storage"} },
		Call: func(_ context.Context, cmd string, args []string) (any, error) {
			switch cmd {
			case "sessions":
				return []map[string]any{{"jid": "<script>alert(1)</script>@example.org/x", "tls": true}}, nil
			case "storage":
				return nil, errors.New("storage not started")
			}
			return map[string]any{"domain": "example.org", "listeners": []string{"starttls 127.0.0.1:5222"}}, nil
		},
		Recent: func() []metrics.Record {
			return []metrics.Record{{Time: time.Unix(0, 0), Level: "WARN", Message: "disk <slow>", Attrs: "dev=sda"}}
		},
	})
}

func get(t *testing.T, h http.Handler, remote, user, pass string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/admin/", nil)
	r.RemoteAddr = remote
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestAccessRules(t *testing.T) {
	h := testHandler(true, "boss", "chief@example.org", "other@elsewhere.example")
	for _, tc := range []struct {
		user, pass string
		code       int
	}{
		{"", "", 401},
		{"boss", "pw-boss", 200},
		{"boss@example.org", "pw-boss", 200},
		{"BOSS", "pw-boss", 200},
		{"chief", "pw-chief", 200},
		{"boss", "wrong", 401},
		{"alice", "pw-alice", 401}, // a valid account, not an admin
		{"other", "pw-other", 401}, // admin of another domain
		{"broken", "x", 401},
	} {
		if code, _ := get(t, h, "192.0.2.1:4000", tc.user, tc.pass); code != tc.code {
			t.Errorf("%s/%s: %d, want %d", tc.user, tc.pass, code, tc.code)
		}
	}
	if code, body := get(t, testHandler(true), "127.0.0.1:1", "boss", "pw-boss"); code != 403 || !strings.Contains(body, "admins") {
		t.Errorf("no admins configured: %d %s", code, body)
	}
	plain := testHandler(false, "boss")
	if code, body := get(t, plain, "192.0.2.1:4000", "boss", "pw-boss"); code != 403 || !strings.Contains(body, "TLS") {
		t.Errorf("plain HTTP from afar: %d %s", code, body)
	}
	if code, _ := get(t, plain, "[::1]:4000", "boss", "pw-boss"); code != 200 {
		t.Errorf("plain HTTP from loopback: %d", code)
	}
}

func TestPageEscapesAndShowsSections(t *testing.T) {
	code, body := get(t, testHandler(true, "boss"), "192.0.2.1:4000", "boss", "pw-boss")
	if code != 200 {
		t.Fatal(code)
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;@example.org/x", "storage not started", "not available on this node",
		"disk &lt;slow&gt;", "dev=sda", "starttls 127.0.0.1:5222", "signed in as boss"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("unescaped script in the page")
	}
}

// Refused logins from one address are throttled (429) after FailMax; other
// addresses are not affected.
func TestRefusedLoginsThrottled(t *testing.T) {
	h := testHandler(true, "boss")
	for i := 0; i < FailMax; i++ {
		if code, _ := get(t, h, "192.0.2.7:1000", "boss", "guess"); code != 401 {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	if code, _ := get(t, h, "192.0.2.7:1001", "boss", "pw-boss"); code != 429 {
		t.Fatalf("after %d refusals: %d, want 429 even with the right password", FailMax, code)
	}
	if code, _ := get(t, h, "192.0.2.8:1000", "boss", "pw-boss"); code != 200 {
		t.Fatalf("another address: %d", code)
	}
	// A browser's first request without credentials does not count.
	h2 := testHandler(true, "boss")
	for i := 0; i < 2*FailMax; i++ {
		get(t, h2, "192.0.2.9:1000", "", "")
	}
	if code, _ := get(t, h2, "192.0.2.9:1000", "boss", "pw-boss"); code != 200 {
		t.Fatalf("requests without credentials throttled: %d", code)
	}
}
