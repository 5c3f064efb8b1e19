package replicated

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedBuf is a log sink the store's goroutines write to while the test reads.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// A stream kind registered with HandleStream (the xmppd cluster bus's 'B') is
// reached only by a holder of the cluster key, over TLS 1.3: a peer with
// another key, a client without a certificate and a plaintext client never
// reach the handler and read nothing it wrote; the refusing node logs one line.
func TestStreamsNeedTheClusterKey(t *testing.T) {
	const kind = byte('T')
	logs := &lockedBuf{}
	cfg := fastConfig(t, "s1", takeIP(), nil, nil, "")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int32
	if err := s.HandleStream(kind, func(c net.Conn) {
		handled.Add(1)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			io.WriteString(c, "secret reply to "+line)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.HandleStream(streamRaft, func(net.Conn) {}); err == nil {
		t.Fatal("raft's stream kind was accepted for another handler")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	addr := s.Addr()

	// The key holder: TLS 1.3, the handler answers.
	good, err := clusterTLS(testKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialCluster(ctx, addr, good, kind)
	if err != nil {
		t.Fatalf("dial with the cluster key: %v", err)
	}
	if v := c.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("cluster stream negotiated TLS version %#x, want TLS 1.3", v)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "secret reply to ping\n" {
		t.Fatalf("key holder's stream: %q %v", got, err)
	}
	c.Close()
	if handled.Load() != 1 {
		t.Fatalf("handler ran %d times for one stream", handled.Load())
	}

	// A dialer with another key refuses the node (it cannot prove the key).
	wrong, err := clusterTLS([]byte("another key entirely, 32 bytes!!"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialCluster(ctx, addr, wrong, kind); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("dial with another key: %v, want ErrWrongKey", err)
	}

	// Clients that do not check the node: the node refuses them before the
	// stream kind is read, so nothing of the handler's comes back.
	readAll := func(name string, conn net.Conn) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte{kind})
		io.WriteString(conn, "ping\n")
		b, err := io.ReadAll(conn)
		if err == nil && len(b) == 0 {
			err = io.EOF
		}
		if bytes.Contains(b, []byte("secret reply")) || err == nil {
			t.Fatalf("%s: read %q (err %v), want the connection refused", name, b, err)
		}
		conn.Close()
	}
	wrongCert := wrong.Clone()
	wrongCert.VerifyPeerCertificate = nil // an intruder that trusts anyone
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	oldTLS := &tls.Config{InsecureSkipVerify: true, Certificates: good.Certificates, MaxVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{{"another key, server not checked", wrongCert}, {"no certificate", noCert}, {"the key's certificate over TLS 1.2", oldTLS}} {
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		readAll(tc.name, tls.Client(raw, tc.cfg))
	}
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	readAll("plaintext", raw)

	if n := handled.Load(); n != 1 {
		t.Fatalf("the handler ran for %d streams, want only the key holder's", n)
	}
	// The refusals come from one host: one log line (per host and minute).
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "refused cluster connection") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "refused cluster connection"); n != 1 {
		t.Fatalf("%d refusal lines, want 1:\n%s", n, logs.String())
	}
}
