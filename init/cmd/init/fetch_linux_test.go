package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFetchConfigURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/xmppd.yaml" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("log_level: debug\n"))
	}))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "xmppd.yaml")
	if err := fetch(context.Background(), srv.URL+"/xmppd.yaml", dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "log_level: debug\n" {
		t.Fatalf("got %q", b)
	}
	err := fetch(context.Background(), srv.URL+"/missing", dst)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing: %v", err)
	}
}
