package httpd

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"xedge/xmppd/tlscert"
)

func TestServeMountedHandlersPlainAndTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, _, err := tlscert.EnsureSelfSigned(dir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlscert.Config(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, useTLS := range []bool{false, true} {
		cfg := tc
		if !useTLS {
			cfg = nil
		}
		s := New("127.0.0.1:0", cfg, nil)
		if err := s.Handle("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })); err != nil {
			t.Fatal(err)
		}
		if err := s.Handle("GET /hello", http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "/hello") {
			t.Fatalf("duplicate pattern: %v", err)
		}
		ctx := context.Background()
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.HasPrefix(s.URL(), "https://"); got != useTLS {
			t.Fatalf("url %s with tls=%v", s.URL(), useTLS)
		}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure()}}
		resp, err := cl.Get(s.URL() + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hi" {
			t.Fatalf("body %q", b)
		}
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Get(s.URL() + "/hello"); err == nil {
			t.Fatal("still serving after Stop")
		}
	}
}
