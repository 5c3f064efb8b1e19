//go:build integration && linux

package netcfg

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNS runs f on a thread switched into ns (sockets and netlink calls made there
// belong to ns).
func inNS(t *testing.T, ns netns.NsHandle, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestDHCPAcquireRenewRelease runs the client against insomniacslk's server4 across a
// veth pair inside a network namespace the test creates, with a 4 s lease so that the
// renewal at T1 happens within the test.
func TestDHCPAcquireRenewRelease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (CI runs integration tests as root)")
	}
	name := fmt.Sprintf("xedge-dhcp-%d", rand.IntN(1e6))
	addNetns(t, name)
	for _, args := range [][]string{
		{"link", "add", "vc0", "type", "veth", "peer", "name", "vs0"},
		{"addr", "add", "10.99.0.1/24", "dev", "vs0"},
		{"link", "set", "vs0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	var mu sync.Mutex
	seen := map[string]int{}
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		typ := m.MessageType()
		mu.Lock()
		key := typ.String()
		if typ == dhcpv4.MessageTypeRequest && !m.ClientIPAddr.IsUnspecified() {
			key = "RENEW"
		}
		seen[key]++
		mu.Unlock()
		var reply dhcpv4.MessageType
		switch typ {
		case dhcpv4.MessageTypeDiscover:
			reply = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			reply = dhcpv4.MessageTypeAck
		default:
			return
		}
		r, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(reply),
			dhcpv4.WithYourIP(net.IPv4(10, 99, 0, 50)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithRouter(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithDNS(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithLeaseTime(4),
			dhcpv4.WithServerIP(net.IPv4(10, 99, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 99, 0, 1))),
			dhcpv4.WithOption(dhcpv4.OptHostName("box7")),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(OptionXedge), []byte("xedge.domain=ns.example"))),
		)
		if err != nil {
			return
		}
		dst := peer
		if r.YourIPAddr != nil && (m.ClientIPAddr.IsUnspecified()) {
			dst = &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
		}
		conn.WriteTo(r.ToBytes(), dst)
	}
	var srv *server4.Server
	if err := inNS(t, ns, func() error {
		var err error
		srv, err = server4.NewServer("vs0", &net.UDPAddr{IP: net.IPv4zero, Port: 67}, handler)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()

	applied := make(chan Lease, 10)
	apply := func(l Lease) error {
		err := inNS(t, ns, func() error { return Configure(l, true) })
		applied <- l
		return err
	}
	d := NewDHCP("vc0", nil, apply)
	var lease Lease
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := inNS(t, ns, func() error {
		var err error
		lease, err = d.Acquire(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if lease.Addr.String() != "10.99.0.50/24" || lease.Xedge != "xedge.domain=ns.example" || lease.Hostname != "box7" || lease.Renew != 2*time.Second {
		t.Fatalf("lease %+v", lease)
	}
	<-applied
	// The address and the default route are on vc0 inside the namespace.
	if err := inNS(t, ns, func() error {
		l, err := netlink.LinkByName("vc0")
		if err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.50/24" {
			return fmt.Errorf("addresses %v", addrs)
		}
		routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(net.IPv4(10, 99, 0, 1)) {
				return nil
			}
		}
		return fmt.Errorf("no default route in %v", routes)
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-applied:
		if !l.ObtainedAt.After(lease.ObtainedAt) {
			t.Fatalf("renewed lease not newer: %+v", l)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("no renewal within 8 s of a 4 s lease")
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	// The release goes out from a socket bound to the leased address, which exists only
	// inside the namespace.
	if err := inNS(t, ns, func() error { return d.Stop(sctx) }); err != nil {
		t.Fatal(err)
	}
	// The RELEASE is a datagram the server's goroutine handles on its own time:
	// wait for it (bounded) rather than reading the counts once.
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen)
	}
	for deadline := time.Now().Add(5 * time.Second); counts()["RELEASE"] < 1 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if c := counts(); c["DISCOVER"] < 1 || c["REQUEST"] < 1 || c["RENEW"] < 1 || c["RELEASE"] < 1 {
		t.Fatalf("server saw %v", c)
	}
}
