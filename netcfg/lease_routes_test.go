package netcfg

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestLeaseMTUAndRoutes(t *testing.T) {
	routes := dhcpv4.Routes{
		{Dest: &net.IPNet{IP: net.IPv4(192, 168, 77, 0).To4(), Mask: net.CIDRMask(24, 32)}, Router: net.IPv4(10, 0, 2, 1)},
		{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: net.IPv4(10, 0, 2, 254)},
	}
	ack, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithLeaseTime(600),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0x78})),
		dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)),
	)
	if err != nil {
		t.Fatal(err)
	}
	l := leaseFromACK("eth0", ack, time.Unix(0, 0))
	if l.MTU != 1400 {
		t.Errorf("mtu %d", l.MTU)
	}
	if len(l.Routes) != 1 || l.Routes[0].Dst != netip.MustParsePrefix("192.168.77.0/24") || l.Routes[0].Gw != netip.MustParseAddr("10.0.2.1") {
		t.Errorf("routes %+v", l.Routes)
	}
	if l.Router != netip.MustParseAddr("10.0.2.254") {
		t.Errorf("default route from option 121: %v", l.Router)
	}
	if !l.Expires().Equal(time.Unix(600, 0)) {
		t.Errorf("expires %v", l.Expires())
	}
}
