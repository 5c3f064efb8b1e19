package c2s

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The per-IP cap: the connection over it gets <policy-violation/> and is closed,
// logged once per address while it stays at the cap; other addresses, exempt
// ones and the same address once a connection ended are served.
func TestPerIPCap(t *testing.T) {
	logs := &syncBuf{}
	e := start(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	e.srv.SetPerIPLimit(2, []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")})
	a := testenv.DialFrom(t, "127.0.0.1", e.addr)
	a.Open("localhost")
	b := testenv.DialFrom(t, "127.0.0.1", e.addr)
	b.Open("localhost")
	for i := 0; i < 2; i++ {
		c := testenv.DialFrom(t, "127.0.0.1", e.addr)
		got, _ := c.ReadAll(5 * time.Second)
		if !strings.Contains(got, "<policy-violation") || !strings.Contains(got, "too many connections") || !strings.Contains(got, "</stream:stream>") {
			t.Fatalf("over the cap: %q", got)
		}
		if !c.Closed(5 * time.Second) {
			t.Fatal("over the cap: not closed")
		}
	}
	if n := strings.Count(logs.String(), "per-IP connection cap reached"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
	o := testenv.DialFrom(t, "127.0.0.2", e.addr)
	if f := o.Open("localhost"); !strings.Contains(f, "starttls") {
		t.Fatalf("another address: %s", f)
	}
	for i := 0; i < 3; i++ {
		x := testenv.DialFrom(t, "127.0.0.3", e.addr)
		if f := x.Open("localhost"); !strings.Contains(f, "starttls") {
			t.Fatalf("exempt address, connection %d: %s", i, f)
		}
	}
	if e.srv.PerIP("127.0.0.1") != 2 || e.srv.PerIP("127.0.0.3") != 0 {
		t.Fatalf("counts: %d %d", e.srv.PerIP("127.0.0.1"), e.srv.PerIP("127.0.0.3"))
	}
	a.Drop()
	waitFor(t, "the dropped connection to be uncounted", func() bool { return e.srv.PerIP("127.0.0.1") == 1 })
	c := testenv.DialFrom(t, "127.0.0.1", e.addr)
	c.StartTLS("localhost")
	c.LoginPlain("localhost", "alice", "secret", "r") // a full session under the cap
	d := testenv.DialFrom(t, "127.0.0.1", e.addr)
	if got, _ := d.ReadAll(5 * time.Second); !strings.Contains(got, "<policy-violation") {
		t.Fatalf("at the cap again: %q", got)
	}
	if n := strings.Count(logs.String(), "per-IP connection cap reached"); n != 2 {
		t.Fatalf("a new episode is logged once more: %d", n)
	}
}

// Shapers per listener: each listener's connections read at its own rate, the
// others at Config.Shaper.
func TestListenerShapers(t *testing.T) {
	e := start(t, func(c *Config) { c.Shaper = 5000 })
	s := New(e.srv.cfg, e.r, e.srv.accounts)
	s.Listen("127.0.0.1:0", false)
	s.Listen("127.0.0.1:0", true) // same address string, other kind: its own shaper
	s.Listen("127.0.0.3:0", false)
	if err := s.SetListenerShaper("127.0.0.1:0", false, 1000); err != nil {
		t.Fatal(err)
	}
	if err := s.SetListenerShaper("127.0.0.1:0", true, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetListenerShaper("127.0.0.3:0", true, 1); err == nil {
		t.Fatal("a shaper for no listener accepted")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	want := map[string]int{"starttls 127.0.0.1": 1000, "direct-tls 127.0.0.1": 0, "starttls 127.0.0.3": 5000}
	for _, a := range s.Addrs() {
		addr := a[strings.IndexByte(a, ' ')+1:]
		c := testenv.Dial(t, addr)
		host := a[:strings.LastIndexByte(a, ':')]
		var rate int
		waitFor(t, "the connection on "+addr, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			for k := range s.conns {
				if k.raw.LocalAddr().String() == c.Conn.RemoteAddr().String() && k.raw.RemoteAddr().String() == c.Conn.LocalAddr().String() {
					rate = 0
					if sc, ok := k.nc.(*shapedConn); ok {
						rate = int(sc.b.rate)
					}
					return true
				}
			}
			return false
		})
		if rate != want[host] {
			t.Errorf("listener %s: rate %d, want %d", addr, rate, want[host])
		}
	}
}
