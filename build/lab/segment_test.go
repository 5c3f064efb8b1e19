package lab

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func testSegment() *Segment {
	return &Segment{ServerIP: netip.MustParseAddr("10.77.0.1"), Prefix: netip.MustParsePrefix("10.77.0.0/24"),
		First: netip.MustParseAddr("10.77.0.11"), Domain: "lab.example", Xedge: "xedge.domain=lab.example", mac: ServerMAC, leases: map[string]netip.Addr{},
		next: netip.MustParseAddr("10.77.0.11")}
}

func clientFrame(t *testing.T, m *dhcpv4.DHCPv4) []byte {
	t.Helper()
	ip := udpPacket(netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68, 67, m.ToBytes())
	return ether(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, m.ClientHWAddr, 0x0800, ip)
}

func parseReply(t *testing.T, frames [][]byte) *dhcpv4.DHCPv4 {
	t.Helper()
	if len(frames) != 1 {
		t.Fatalf("%d frames", len(frames))
	}
	f := frames[0]
	if binary.BigEndian.Uint16(f[12:14]) != 0x0800 || checksum(f[14:34]) != 0 {
		t.Fatalf("bad IPv4 frame (header checksum)")
	}
	m, err := dhcpv4.FromBytes(f[14+28:])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSegmentDHCP(t *testing.T) {
	s := testSegment()
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x01, 0x01}
	disc, _ := dhcpv4.NewDiscovery(mac)
	offer := parseReply(t, s.Handle(clientFrame(t, disc)))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 77, 0, 11)) {
		t.Fatalf("offer %s", offer.Summary())
	}
	if string(offer.Options.Get(dhcpv4.GenericOptionCode(224))) != "xedge.domain=lab.example" || offer.DomainName() != "lab.example" || offer.HostName() != "node1" {
		t.Fatalf("options %s", offer.Summary())
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack := parseReply(t, s.Handle(clientFrame(t, req)))
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4(10, 77, 0, 11)) {
		t.Fatalf("ack %s", ack.Summary())
	}
	// a second client gets the next address; the first keeps its own
	disc2, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x01, 0x02})
	if o := parseReply(t, s.Handle(clientFrame(t, disc2))); !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 12)) {
		t.Fatalf("second %s", o.Summary())
	}
	if a, _ := s.Assigned(mac.String()); a != netip.MustParseAddr("10.77.0.11") {
		t.Fatalf("assigned %v", a)
	}
	// a request for someone else's address is refused
	bad, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 99))))
	if n := parseReply(t, s.Handle(clientFrame(t, bad))); n.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("want NAK, got %s", n.Summary())
	}
}

func TestSegmentARP(t *testing.T) {
	s := testSegment()
	who := make([]byte, 28)
	binary.BigEndian.PutUint16(who[0:2], 1)
	binary.BigEndian.PutUint16(who[2:4], 0x0800)
	who[4], who[5] = 6, 4
	binary.BigEndian.PutUint16(who[6:8], 1)
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x01, 0x01}
	copy(who[8:14], mac)
	copy(who[14:18], []byte{10, 77, 0, 11})
	copy(who[24:28], []byte{10, 77, 0, 1})
	out := s.Handle(ether(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, 0x0806, who))
	if len(out) != 1 || binary.BigEndian.Uint16(out[0][14+6:14+8]) != 2 || net.HardwareAddr(out[0][14+8:14+14]).String() != ServerMAC.String() {
		t.Fatalf("arp reply %x", out)
	}
	copy(who[24:28], []byte{10, 77, 0, 12}) // not ours
	if out := s.Handle(ether(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, 0x0806, who)); len(out) != 0 {
		t.Fatal("answered ARP for another address")
	}
}

// TestSegmentOverMulticast puts a DISCOVER on a real multicast group on loopback, the
// way qemu's socket netdev does, and reads the OFFER back from the group.
func TestSegmentOverMulticast(t *testing.T) {
	s := testSegment()
	s.Group = netip.MustParseAddrPort("230.77.0.1:24577")
	s.First = netip.MustParseAddr("10.77.0.11")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	lo, _ := loopback()
	rx, err := net.ListenMulticastUDP("udp4", lo, net.UDPAddrFromAddrPort(s.Group))
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(s.Group))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	disc, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x01, 0x09})
	if _, err := tx.Write(clientFrame(t, disc)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 10; i++ {
		n, _, err := rx.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		if net.HardwareAddr(buf[6:12]).String() != ServerMAC.String() {
			continue // our own DISCOVER looped back
		}
		m := parseReply(t, [][]byte{buf[:n]})
		if m.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("got %s", m.Summary())
		}
		return
	}
	t.Fatal("no offer")
}

func TestSegmentFixedAddresses(t *testing.T) {
	s := testSegment()
	s.Fixed = LabAddr
	s.next = netip.MustParseAddr("10.77.0.12")
	d2, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x01, 0x02})
	if o := parseReply(t, s.Handle(clientFrame(t, d2))); !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 12)) || o.HostName() != "node2" {
		t.Fatalf("lab node 2: %s", o.Summary())
	}
	// a foreign MAC gets a pool address, skipping the pinned one
	d9, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x02, 0, 0, 0, 0, 9})
	if o := parseReply(t, s.Handle(clientFrame(t, d9))); !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 13)) {
		t.Fatalf("pool: %s", o.Summary())
	}
}

func TestMergeYAMLKeepsScenarioKeys(t *testing.T) {
	base := "raft-heartbeat-timeout: 2500ms\nvip: 10.77.0.200/24\nvip-interface: eth0\n"
	got := MergeYAML(base, ServicesYAML("10.77.0.100/24", true))
	want := base + "dns-listen: 0.0.0.0:53\n"
	if got != want {
		t.Fatalf("MergeYAML:\n%s\nwant:\n%s", got, want)
	}
	// A scenario's file first: its keys replace the lab's timing.
	if got := MergeYAML("gossip-probe-interval: 300ms\n", "raft-heartbeat-timeout: 2500ms\ngossip-probe-interval: 1s\n"); got != "gossip-probe-interval: 300ms\nraft-heartbeat-timeout: 2500ms\n" {
		t.Fatalf("MergeYAML override: %q", got)
	}
	if got := MergeYAML("a: 1", ServicesYAML("10.77.0.100/24", false)); got != "a: 1\nvip: 10.77.0.100/24\nvip-interface: eth0\n" {
		t.Fatalf("MergeYAML without newline: %q", got)
	}
}

// A boot server caught mid-exec (empty command line) is alive while it starts;
// a foreign command line or a gone process is not.
func TestStartingAlive(t *testing.T) {
	for _, c := range []struct {
		b    string
		err  error
		want bool
	}{
		{"", nil, true},
		{"xedge\x00lab\x00--dir\x00/tmp/lab1\x00segment\x00", nil, true},
		{"ip\x00netns\x00exec\x00x\x00xedge\x00lab\x00--dir\x00/tmp/lab1\x00", nil, true},
		{"sshd\x00", nil, false},
		{"", os.ErrNotExist, false},
	} {
		if got := startingAlive([]byte(c.b), c.err, "/tmp/lab1"); got != c.want {
			t.Errorf("startingAlive(%q, %v) = %v, want %v", c.b, c.err, got, c.want)
		}
	}
}
