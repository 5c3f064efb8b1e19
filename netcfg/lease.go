package netcfg

import (
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// OptionXedge is the site-private DHCP option (RFC 2132 range 224-254) that carries
// xedge parameters as text in kernel-command-line syntax, e.g.
// "xedge.domain=example.org xedge.seeds=10.0.0.5".
const OptionXedge = 224

// Lease is what a DHCP lease says, reduced to what the node uses. It is plain data so
// that config code can read it without importing the DHCP library.
type Lease struct {
	Interface  string
	Addr       netip.Prefix // address and netmask
	Router     netip.Addr   // zero when the server sent none
	DNS        []netip.Addr
	Domain     string // option 15
	Hostname   string // option 12
	Server     netip.Addr
	Duration   time.Duration
	Renew      time.Duration // T1
	Rebind     time.Duration // T2
	Xedge      string        // OptionXedge, raw text
	MTU        int           // option 26 (0: none)
	Routes     []Route       // option 121 (RFC 3442), else option 33
	Via        string        // how it was obtained: discover, renew or rebind
	ObtainedAt time.Time
}

// Route is a static route a lease carries.
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

// Expires returns when the lease runs out.
func (l Lease) Expires() time.Time { return l.ObtainedAt.Add(l.Duration) }

// leaseFromACK converts a DHCPACK into a Lease.
func leaseFromACK(ifname string, ack *dhcpv4.DHCPv4, now time.Time) Lease {
	l := Lease{Interface: ifname, ObtainedAt: now}
	ip, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	ones := 24
	if m := ack.SubnetMask(); m != nil {
		ones, _ = m.Size()
	}
	l.Addr = netip.PrefixFrom(ip, ones)
	if rs := ack.Router(); len(rs) > 0 {
		l.Router, _ = netip.AddrFromSlice(rs[0].To4())
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	l.Domain = strings.TrimSpace(ack.DomainName())
	l.Hostname = strings.TrimSpace(ack.HostName())
	if s := ack.ServerIdentifier(); s != nil {
		l.Server, _ = netip.AddrFromSlice(s.To4())
	}
	l.Duration = ack.IPAddressLeaseTime(time.Hour)
	l.Renew = ack.IPAddressRenewalTime(l.Duration / 2)
	l.Rebind = ack.IPAddressRebindingTime(l.Duration * 7 / 8)
	if l.Renew <= 0 || l.Renew > l.Duration {
		l.Renew = l.Duration / 2
	}
	if l.Rebind <= l.Renew || l.Rebind > l.Duration {
		l.Rebind = l.Duration * 7 / 8
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err == nil && mtu >= 576 {
		l.MTU = int(mtu)
	}
	for _, r := range ack.ClasslessStaticRoute() {
		dst, ok1 := netip.AddrFromSlice(r.Dest.IP.To4())
		gw, ok2 := netip.AddrFromSlice(r.Router.To4())
		if !ok1 || !ok2 {
			continue
		}
		ones, _ := r.Dest.Mask.Size()
		if ones == 0 && !l.Router.IsValid() {
			l.Router = gw // RFC 3442: with option 121 the router option is ignored
			continue
		}
		if ones == 0 {
			continue
		}
		l.Routes = append(l.Routes, Route{Dst: netip.PrefixFrom(dst, ones).Masked(), Gw: gw})
	}
	if v := ack.Options.Get(dhcpv4.GenericOptionCode(OptionXedge)); v != nil {
		l.Xedge = strings.TrimRight(string(v), "\x00")
	}
	return l
}

// requestedOptions are the options every request asks for.
var requestedOptions = []dhcpv4.OptionCode{
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionIPAddressLeaseTime,
	dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
	dhcpv4.OptionInterfaceMTU, dhcpv4.OptionClasslessStaticRoute,
	dhcpv4.GenericOptionCode(OptionXedge),
}
