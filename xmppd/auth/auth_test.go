package auth

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"xedge/xmppd/internal/scram"
	"xedge/xmppd/scramkey"
)

// TestMain lets the test binary play an extauth script (XEDGE_EXTAUTH_MODE).
func TestMain(m *testing.M) {
	if mode := os.Getenv("XEDGE_EXTAUTH_MODE"); mode != "" {
		fakeScript(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeScript speaks extauth on stdin/stdout: "ok" answers every request (auth
// true for password "pw"), "once" answers one request and exits, "hang" reads
// requests and never answers.
func fakeScript(mode string) {
	for {
		var n [2]byte
		if _, err := io.ReadFull(os.Stdin, n[:]); err != nil {
			return
		}
		line := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(os.Stdin, line); err != nil {
			return
		}
		if mode == "hang" {
			continue
		}
		f := strings.SplitN(string(line), ":", 4)
		ok := f[0] == "isuser" || (f[0] == "auth" && len(f) == 4 && f[3] == "pw")
		res := []byte{0, 2, 0, 0}
		if ok {
			res[3] = 1
		}
		os.Stdout.Write(res)
		if mode == "once" {
			return
		}
	}
}

func TestEncodeRequest(t *testing.T) {
	got, err := encodeRequest("auth", "alice", "example.com", "pa:ss")
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0, 29}, "auth:alice:example.com:pa:ss"...)
	want[1] = byte(len(want) - 2)
	if !bytes.Equal(got, want) {
		t.Fatalf("encodeRequest = %q, want %q", got, want)
	}
	if _, err := encodeRequest("auth", "u", "d", strings.Repeat("x", 70000)); err == nil {
		t.Fatal("a request past 65535 bytes was encoded")
	}
}

func TestReadReply(t *testing.T) {
	for _, c := range []struct {
		in      []byte
		want    bool
		wantErr error
	}{
		{[]byte{0, 2, 0, 1}, true, nil},
		{[]byte{0, 2, 0, 0}, false, nil},
		{[]byte{0, 3, 0, 0, 1}, false, errProtocol},
		{[]byte{0, 2, 0, 7}, false, errProtocol},
		{[]byte{0, 2, 0}, false, errProtocol},
		{nil, false, io.EOF},
	} {
		got, err := readReply(bytes.NewReader(c.in))
		if got != c.want || !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
			t.Errorf("readReply(% x) = %v, %v; want %v, %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}

// ejabberdRow is what ejabberd stores for password in its users table.
func ejabberdRow(t *testing.T, mech, password string) []any {
	t.Helper()
	k, err := scram.Derive(mech, password, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	stored := b64(k.StoredKey)
	if mech == scram.SHA256 {
		stored = "sha256:" + stored
	}
	return []any{stored, b64(k.ServerKey), b64(k.Salt), int32(k.Iterations)}
}

// ejabberdSHA512Row is ejabberd's row for a SCRAM-SHA-512 credential, a hash
// no mechanism of xmppd offers: verified by PLAIN through scramkey.DeriveHash.
func ejabberdSHA512Row(t *testing.T, password string) []any {
	t.Helper()
	salt := []byte("0123456789abcdef")
	k, err := scramkey.DeriveHash(sha512.New, password, salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	return []any{"sha512:" + b64(k.Stored), b64(k.Server), b64(salt), int32(4096)}
}

func TestCredentialFormats(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("bc-pw"), bcrypt.MinCost)
	for _, c := range []struct {
		name, format string
		row          []any
		pw, hash     string
	}{
		{"plain", FormatPlain, []any{"plain-pw"}, "plain-pw", ""},
		{"plain bytea", FormatPlain, []any{[]byte("plain-pw")}, "plain-pw", ""},
		{"bcrypt", FormatBcrypt, []any{string(h)}, "bc-pw", ""},
		{"scram sha1", FormatSCRAM, ejabberdRow(t, scram.SHA1, "sc-pw"), "sc-pw", "sha1"},
		{"scram sha256", FormatSCRAM, ejabberdRow(t, scram.SHA256, "sc-pw"), "sc-pw", "sha256"},
		{"scram sha512", FormatSCRAM, ejabberdSHA512Row(t, "sc-pw"), "sc-pw", "sha512"},
		{"scram table, plain row", FormatSCRAM, []any{"pp", "", "", int32(0)}, "pp", ""},
	} {
		cr, err := parseCredential(c.format, c.row)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !cr.verify(c.pw) || cr.verify(c.pw+"x") || cr.verify("") {
			t.Errorf("%s: verify wrong", c.name)
		}
		if cr.scram != (c.hash != "") || cr.hash != c.hash {
			t.Errorf("%s: scram %v hash %q, want %q", c.name, cr.scram, cr.hash, c.hash)
		}
	}
	for _, c := range []struct {
		format string
		row    []any
	}{
		{FormatPlain, []any{nil}},
		{FormatBcrypt, []any{"not-a-hash"}},
		{FormatSCRAM, []any{"only-one-column"}},
		{FormatSCRAM, []any{"!!", "a2V5", "c2FsdA==", int32(4096)}},
	} {
		if _, err := parseCredential(c.format, c.row); err == nil {
			t.Errorf("%s %v accepted", c.format, c.row)
		}
	}
}

func TestLDAPFilterEscapes(t *testing.T) {
	b, err := newLDAP(LDAPConfig{Servers: []string{"127.0.0.1"}, Base: "dc=x", UIDs: []string{"uid", "mail"}, Filter: "(objectClass=person)"}, time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	got := b.filter("a*)(uid=*")
	want := `(&(|(uid=a\2a\29\28uid=\2a)(mail=a\2a\29\28uid=\2a))(objectClass=person))`
	if got != want {
		t.Fatalf("filter = %s, want %s", got, want)
	}
	if ok, err := b.Check(context.Background(), "alice", ""); ok || err != nil {
		t.Fatalf("an empty password (an unauthenticated bind) was not refused at once: %v %v", ok, err)
	}
}

// fakeBackend answers from fields and counts Exists calls.
type fakeBackend struct {
	err    error
	exists atomic.Int32
}

func (f *fakeBackend) Start(context.Context) error { return nil }
func (f *fakeBackend) Stop(context.Context) error  { return nil }
func (f *fakeBackend) Check(_ context.Context, _, pw string) (bool, error) {
	return pw == "pw", f.err
}
func (f *fakeBackend) Exists(context.Context, string) (bool, error) {
	f.exists.Add(1)
	return true, f.err
}

func TestOutageLoggedOnceAndExistsCached(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	fb := &fakeBackend{err: ErrUnavailable}
	s := &Service{cfg: Config{Method: SQL, CacheTime: time.Minute, Timeout: time.Second}, backend: fb, log: log, cache: map[string]cached{}}
	ctx := context.Background()
	for range 3 {
		if _, err := s.CheckPassword(ctx, "alice", "pw"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("CheckPassword err = %v, want ErrUnavailable", err)
		}
	}
	if n := strings.Count(logs.String(), "until it answers"); n != 1 {
		t.Fatalf("%d outage lines for 3 failures, want 1:\n%s", n, logs.String())
	}
	fb.err = nil
	if ok, err := s.CheckPassword(ctx, "alice", "pw"); !ok || err != nil {
		t.Fatalf("CheckPassword = %v, %v", ok, err)
	}
	if !strings.Contains(logs.String(), "answers again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	for range 3 {
		if ok, err := s.Exists(ctx, "bob"); !ok || err != nil {
			t.Fatalf("Exists = %v, %v", ok, err)
		}
	}
	if n := fb.exists.Load(); n != 1 {
		t.Fatalf("backend asked %d times in the cache time, want 1", n)
	}
	if err := s.Create(ctx, "carol", "pw"); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Create on a read-only backend: %v", err)
	}
}

// script returns an external backend running this test binary as its script.
func script(t *testing.T, mode string, timeout time.Duration) *externalBackend {
	t.Helper()
	t.Setenv("XEDGE_EXTAUTH_MODE", mode)
	b, err := newExternal(ExternalConfig{Program: os.Args[0], PoolSize: 1}, "example.com", timeout, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

func TestExternalScriptRestartedWhenItDies(t *testing.T) {
	b := script(t, "once", 5*time.Second)
	ctx := context.Background()
	w := b.workers[0]
	pid := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.alive() {
			return 0
		}
		return w.cmd.Process.Pid
	}
	// Each script answers one request and exits; it is started again without
	// waiting for a request (after its restart pause), and a request that finds
	// it dead anyway is served by a fresh one.
	for i := range 2 {
		first := pid()
		if ok, err := b.Check(ctx, "alice", "pw"); !ok || err != nil {
			t.Fatalf("request %d: %v, %v", i, ok, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for p := pid(); p == 0 || p == first; p = pid() {
			if time.Now().After(deadline) {
				t.Fatalf("request %d: the script that exited was not started again", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if ok, err := b.Check(ctx, "alice", "wrong"); ok || err != nil {
		t.Fatalf("wrong password: %v, %v", ok, err)
	}
	// Killed behind our back between requests: the next request still succeeds.
	w.mu.Lock()
	w.cmd.Process.Kill()
	exited := w.exited
	w.notBefore = time.Now().Add(time.Hour) // no restart by the timer: the request must do it
	w.mu.Unlock()
	<-exited
	w.mu.Lock()
	w.notBefore = time.Time{}
	w.mu.Unlock()
	if ok, err := b.Check(ctx, "alice", "pw"); !ok || err != nil {
		t.Fatalf("after a kill: %v, %v", ok, err)
	}
}

func TestExternalScriptTimeout(t *testing.T) {
	b := script(t, "hang", 200*time.Millisecond)
	_, err := b.Check(context.Background(), "alice", "pw")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a script that does not answer: err %v, want ErrUnavailable", err)
	}
	if b.workers[0].alive() {
		t.Fatal("the script that missed its deadline still runs (its stream is out of step)")
	}
	// Right after, the restart pause: unavailable at once, no spinning.
	if _, err := b.Check(context.Background(), "alice", "pw"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v", err)
	}
}

func TestExternalScriptMissing(t *testing.T) {
	b, err := newExternal(ExternalConfig{Program: "/nonexistent/extauth"}, "example.com", time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("a missing script must not stop the server: %v", err)
	}
	defer b.Stop(context.Background())
	if _, err := b.Exists(context.Background(), "alice"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
}
