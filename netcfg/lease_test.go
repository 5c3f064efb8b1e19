package netcfg

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestLeaseFromACK(t *testing.T) {
	ack, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
		dhcpv4.WithServerIP(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithLeaseTime(600),
		dhcpv4.WithOption(dhcpv4.OptDomainName("example.org")),
		dhcpv4.WithOption(dhcpv4.OptHostName("node1")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(OptionXedge), []byte("xedge.domain=chat.example.org"))),
	)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	l := leaseFromACK("eth0", ack, now)
	if l.Addr != netip.MustParsePrefix("10.0.2.15/24") {
		t.Errorf("addr %v", l.Addr)
	}
	if l.Router != netip.MustParseAddr("10.0.2.2") || len(l.DNS) != 1 {
		t.Errorf("router %v dns %v", l.Router, l.DNS)
	}
	if l.Domain != "example.org" || l.Hostname != "node1" || l.Xedge != "xedge.domain=chat.example.org" {
		t.Errorf("strings: %+v", l)
	}
	if l.Duration != 600*time.Second || l.Renew != 300*time.Second || l.Rebind != 525*time.Second {
		t.Errorf("times %v %v %v", l.Duration, l.Renew, l.Rebind)
	}
}
