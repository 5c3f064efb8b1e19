package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFetchParamsRetriesAndStopsWithCtx: a busy boot server (503) is asked
// again after a pause, and the pauses end with the caller's context (the error
// names the last failure).
func TestFetchParamsRetriesAndStopsWithCtx(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fetchParams(ctx, srv.URL+"/", "lo")
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want the 503", err)
	}
	if n := asked.Load(); n < 2 {
		t.Fatalf("asked %d times, want a retry after 500ms", n)
	}
	// Without ctx the next pause alone is 1 s.
	if took > 1200*time.Millisecond {
		t.Fatalf("fetchParams took %v after its context ended", took)
	}
}
