package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestGateAdmitsOnlyListeningNodes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	notified := make(chan struct{}, 8)
	g := &Gate{Notify: func() { notified <- struct{}{} }}
	if g.Admit("n1", addr, true) {
		t.Fatal("admitted before any check")
	}
	select {
	case <-notified:
	case <-time.After(2 * time.Second):
		t.Fatal("no notification after a successful connect")
	}
	if !g.Admit("n1", addr, true) {
		t.Fatal("listening node not admitted after the check")
	}
	// It dies (gossip: failed) and comes back without a listener: checked
	// again and kept out.
	g.Admit("n1", addr, false)
	ln.Close()
	if g.Admit("n1", addr, true) {
		t.Fatal("admitted again without a new check")
	}
	time.Sleep(300 * time.Millisecond)
	for range 5 {
		if g.Admit("n1", addr, true) {
			t.Fatal("admitted while its port refuses")
		}
		time.Sleep(250 * time.Millisecond)
	}
	if g.Admit("n2", netip.AddrPort{}, true) {
		t.Fatal("admitted without an address")
	}
}
