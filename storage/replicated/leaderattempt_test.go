package replicated

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A leader that died without closing its connections (power loss, cut link)
// accepts nothing more and answers nothing: one forwarded write must give up
// on it after leaderAttempt, so submit can retry with the next leader, instead
// of waiting for TCP's retransmission timeout (70 s seen in the VIP benchmark).
func TestCallWithinGivesUpOnSilentLeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // accepted, never answered: a frozen peer
		}
	}()
	tc, err := clusterTLS([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	p := &rpcClient{tls: tc, idle: map[string][]*rpcConn{}}
	start := time.Now()
	_, err = p.callWithin(context.Background(), ln.Addr().String(), &rpcRequest{Op: "apply"}, leaderAttempt)
	took := time.Since(start)
	if err == nil || !errors.Is(err, ErrUnreachable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call to a silent peer: err = %v, want unreachable or deadline", err)
	}
	if took > leaderAttempt+2*time.Second {
		t.Fatalf("call to a silent peer took %v, want about %v", took, leaderAttempt)
	}
	if leaderAttempt > 2*time.Second {
		t.Fatalf("leaderAttempt = %v: a dead leader would hold writers longer than an election", leaderAttempt)
	}
}
