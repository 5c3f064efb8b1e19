package iscsi

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A node that starts while its target does not answer yet (rebooting, or a host
// too loaded to accept in time) waits for it: DialRetry logs in once the target
// listens. Dial alone fails at the first refused connect (xmppd exited at start
// in qemu scenario (f): "iscsi: dial ...: no answer within 500ms").
func TestDialRetryWaitsForTheTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there: connects are refused
	cfg := Config{Portal: addr, Target: "iqn.2025-01.test:fake", TaskTimeout: time.Second,
		NOPInterval: 300 * time.Millisecond, DialTimeout: 3 * time.Second, Logger: quietLogger()}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, cfg); err == nil || !Transient(err) {
		t.Fatalf("Dial with no target: %v, want a transient error", err)
	}
	var retries atomic.Int32
	started := make(chan struct{})
	type result struct {
		d   *Device
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := DialRetry(ctx, cfg, func(attempt int, err error) {
			if retries.Add(1) == 2 {
				close(started) // refused twice: now the target comes
			}
		})
		done <- result{d, err}
	}()
	select {
	case <-started:
	case r := <-done:
		t.Fatalf("DialRetry returned before the target listened: %v", r.err)
	}
	ft := newFakeTargetAt(t, addr)
	r := <-done
	if r.err != nil {
		t.Fatalf("DialRetry: %v", r.err)
	}
	defer r.d.Close()
	if _, err := r.d.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	logins := ft.logins
	ft.mu.Unlock()
	if logins == 0 || r.d.State() != StateConnected {
		t.Fatalf("logins %d, state %v", logins, r.d.State())
	}
}

// A login the target refuses for good is not retried; an unanswered or
// refused connect, a timeout, a target error (status class 3) are.
func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("iscsi: login: %w", ErrAuth), false},
		{fmt.Errorf("x: %w", ErrTargetNotFound), false},
		{&LoginError{Class: 2, Detail: 1}, false},
		{fmt.Errorf("iscsi: LUN 0 is peripheral device type 0x5, not a disk"), false},
		{fmt.Errorf("iscsi: TEST UNIT READY: %w", &SCSIError{}), false},
		{&LoginError{Class: 3}, true},
		{fmt.Errorf("iscsi: dial x: %w within 500ms", errNoAnswer), true},
		{fmt.Errorf("iscsi: dial x: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{fmt.Errorf("iscsi: INQUIRY: %w", ErrConnectionLost), true},
		{fmt.Errorf("iscsi: login: %w", io.EOF), true},
		{context.DeadlineExceeded, true},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
