package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Call runs handlers in-process (the web admin page) with the same guards as
// the socket: unknown commands and panics are errors, not crashes.
func TestCallInProcess(t *testing.T) {
	s := New(t.TempDir()+"/a.sock", nil)
	s.Handle("echo", func(_ context.Context, a []string) (any, error) { return strings.Join(a, " "), nil })
	s.Handle("fail", func(context.Context, []string) (any, error) { return nil, errors.New("nope") })
	s.Handle("boom", func(context.Context, []string) (any, error) { panic("bug") })
	ctx := context.Background()
	if v, err := s.Call(ctx, "echo", []string{"a", "b"}); err != nil || v != "a b" {
		t.Fatalf("echo: %v %v", v, err)
	}
	if _, err := s.Call(ctx, "fail", nil); err == nil || err.Error() != "nope" {
		t.Fatalf("fail: %v", err)
	}
	if _, err := s.Call(ctx, "boom", nil); err == nil || !strings.Contains(err.Error(), "internal error in boom") {
		t.Fatalf("panic: %v", err)
	}
	if _, err := s.Call(ctx, "nosuch", nil); err == nil || !strings.Contains(err.Error(), `unknown command "nosuch"`) {
		t.Fatalf("unknown: %v", err)
	}
	if got := s.Commands(); strings.Join(got, ",") != "boom,echo,fail" {
		t.Fatalf("commands %v", got)
	}
}
