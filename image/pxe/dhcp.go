package pxe

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Modes of the DHCP side.
const (
	// ModeFull hands out addresses (the lab, or a segment without a DHCP server).
	ModeFull = "full"
	// ModeProxy answers only PXE firmware's requests with boot information and
	// leaves addresses to the site's DHCP server (RFC 4578 / PXE 2.1 ProxyDHCP).
	ModeProxy = "proxy"
)

// DHCP options iPXE knows (iPXE's include/ipxe/dhcp.h).
const (
	optIPXEEncap  = 175 // iPXE encapsulated options
	subNoPXEDHCP  = 176 // inside 175: do not wait for ProxyDHCP offers
	optXedge      = 224 // site-private: xedge.* parameters as text
	pxeClientID   = "PXEClient"
	proxyDHCPPort = 4011
)

// Client is what a DHCP request says about the firmware that sent it.
type Client struct {
	MAC  net.HardwareAddr
	PXE  bool      // vendor class (60) starts with PXEClient
	IPXE bool      // user class (77) "iPXE" or iPXE's option 175 present
	Arch iana.Arch // client system architecture (93); 0 = x86 BIOS
}

// Classify reads the firmware's identity from a request.
func Classify(m *dhcpv4.DHCPv4) Client {
	c := Client{MAC: m.ClientHWAddr}
	c.PXE = strings.HasPrefix(m.ClassIdentifier(), pxeClientID)
	if uc := m.GetOneOption(dhcpv4.OptionUserClassInformation); bytes.Contains(uc, []byte("iPXE")) {
		c.IPXE = true
	}
	if m.GetOneOption(dhcpv4.GenericOptionCode(optIPXEEncap)) != nil {
		c.IPXE = true
	}
	if a := m.ClientArch(); len(a) > 0 {
		c.Arch = a[0]
	}
	return c
}

// legacyBootFile is the iPXE binary legacy PXE firmware fetches by TFTP ("" when the
// architecture has none): Debian's `ipxe` package ships both in /usr/lib/ipxe.
func legacyBootFile(a iana.Arch) string {
	switch a {
	case iana.INTEL_X86PC:
		return "undionly.kpxe"
	case iana.EFI_X86_64, iana.EFI_BC:
		return "ipxe.efi"
	}
	return ""
}

// Pool hands out addresses by MAC: fixed ones first, then the next free address of
// [First, Last]. Leases are kept in memory for the life of the server; an expired
// lease is reused only when the range is exhausted.
type Pool struct {
	Prefix      netip.Prefix // subnet (netmask for clients)
	First, Last netip.Addr
	Lease       time.Duration
	// Fixed, when set, gives a MAC its address (ok=false: take one from the range).
	Fixed func(mac net.HardwareAddr) (netip.Addr, bool)

	mu     sync.Mutex
	leases map[string]lease // by MAC
}

type lease struct {
	addr    netip.Addr
	expires time.Time
}

// Addr returns the address for mac, allocating one if needed.
func (p *Pool) Addr(mac net.HardwareAddr, now time.Time) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leases == nil {
		p.leases = map[string]lease{}
	}
	key := mac.String()
	if l, ok := p.leases[key]; ok {
		p.leases[key] = lease{l.addr, now.Add(p.Lease)}
		return l.addr, nil
	}
	if p.Fixed != nil {
		if a, ok := p.Fixed(mac); ok {
			p.leases[key] = lease{a, now.Add(p.Lease)}
			return a, nil
		}
	}
	used := map[netip.Addr]string{}
	for m, l := range p.leases {
		used[l.addr] = m
	}
	var oldest string
	for a := p.First; a.IsValid() && a.Compare(p.Last) <= 0; a = a.Next() {
		m, taken := used[a]
		if !taken {
			p.leases[key] = lease{a, now.Add(p.Lease)}
			return a, nil
		}
		if taken && now.After(p.leases[m].expires) && (oldest == "" || p.leases[m].expires.Before(p.leases[oldest].expires)) {
			oldest = m
		}
	}
	if oldest != "" {
		a := p.leases[oldest].addr
		delete(p.leases, oldest)
		p.leases[key] = lease{a, now.Add(p.Lease)}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("address range %s-%s exhausted", p.First, p.Last)
}

// Leases lists current leases (MAC -> address), sorted by address.
func (p *Pool) Leases() map[string]netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]netip.Addr, len(p.leases))
	for m, l := range p.leases {
		out[m] = l.addr
	}
	return out
}

// Release forgets mac's lease (DHCPRELEASE).
func (p *Pool) Release(mac net.HardwareAddr) {
	p.mu.Lock()
	delete(p.leases, mac.String())
	p.mu.Unlock()
}

// dhcpPlan is everything a reply needs besides the request.
type dhcpPlan struct {
	mode     string
	serverIP netip.Addr
	pool     *Pool
	router   netip.Addr
	dns      []netip.Addr
	domain   string
	xedge    string // option 224
	hostname func(netip.Addr, net.HardwareAddr) string
	bootURL  string      // iPXE script URL
	noBoot   atomic.Bool // DHCP only for now (SetBootOffers)
	tftp     bool        // legacy PXE: offer iPXE by TFTP
	now      func() time.Time
}

// reply answers one request on port 67 (port4011: on the ProxyDHCP port). A nil
// reply means "stay silent" (not for us, or nothing to say).
func (p *dhcpPlan) reply(req *dhcpv4.DHCPv4, port4011 bool) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	c := Classify(req)
	sid := req.ServerIdentifier()
	ours := sid == nil || sid.IsUnspecified() || sid.Equal(net.IP(p.serverIP.AsSlice()))
	typ := req.MessageType()
	if typ == dhcpv4.MessageTypeRelease && p.pool != nil && ours {
		p.pool.Release(req.ClientHWAddr)
		return nil, nil
	}
	if p.mode == ModeProxy || port4011 {
		return p.proxyReply(req, c, typ, ours, port4011)
	}
	var rtyp dhcpv4.MessageType
	switch typ {
	case dhcpv4.MessageTypeDiscover:
		rtyp = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if !ours {
			return nil, nil // the client chose another server
		}
		rtyp = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	addr, err := p.pool.Addr(req.ClientHWAddr, p.now())
	if err != nil {
		return nil, err
	}
	if rtyp == dhcpv4.MessageTypeAck {
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if want != nil && !want.IsUnspecified() && !want.Equal(net.IP(addr.AsSlice())) {
			return dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(p.serverIP.AsSlice()))))
		}
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(rtyp),
		dhcpv4.WithYourIP(net.IP(addr.AsSlice())),
		dhcpv4.WithServerIP(net.IP(p.serverIP.AsSlice())),
		dhcpv4.WithNetmask(net.CIDRMask(p.pool.Prefix.Bits(), 32)),
		dhcpv4.WithLeaseTime(uint32(p.pool.Lease / time.Second)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(p.serverIP.AsSlice()))),
	}
	if p.hostname != nil {
		if h := p.hostname(addr, req.ClientHWAddr); h != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(h)))
		}
	}
	if p.router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(net.IP(p.router.AsSlice()))))
	}
	if len(p.dns) > 0 {
		var ips []net.IP
		for _, d := range p.dns {
			ips = append(ips, net.IP(d.AsSlice()))
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(ips...)))
	}
	if p.domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(p.domain)))
	}
	if p.xedge != "" {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optXedge), []byte(p.xedge)))
	}
	mods = append(mods, p.bootMods(c, false)...)
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// bootMods adds the boot information for a PXE or iPXE client: iPXE gets the boot
// script's URL and option 175/176 (no ProxyDHCP wait: this server already answered
// everything); legacy PXE firmware gets iPXE by TFTP.
func (p *dhcpPlan) bootMods(c Client, proxy bool) []dhcpv4.Modifier {
	var mods []dhcpv4.Modifier
	switch {
	case p.bootURL == "" || p.noBoot.Load():
		return nil // DHCP only: nothing to boot
	case c.IPXE:
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(p.bootURL)))
		if !proxy {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optIPXEEncap), []byte{subNoPXEDHCP, 1, 1}))
		}
	case c.PXE && p.tftp:
		f := legacyBootFile(c.Arch)
		if f == "" {
			return nil
		}
		mods = append(mods, dhcpv4.WithServerIP(net.IP(p.serverIP.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptTFTPServerName(p.serverIP.String())),
			dhcpv4.WithOption(dhcpv4.OptBootFileName(f)))
	default:
		return nil
	}
	if proxy || c.PXE {
		// Vendor class PXEClient and PXE_DISCOVERY_CONTROL=8 (boot the file named
		// here, no boot server discovery or menu).
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(pxeClientID)),
			dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	return mods
}

// proxyReply is ProxyDHCP: to a PXE client's DISCOVER an offer without an address
// but with the boot file; to its REQUEST on port 4011 (or on 67 naming us) an ACK.
func (p *dhcpPlan) proxyReply(req *dhcpv4.DHCPv4, c Client, typ dhcpv4.MessageType, ours, port4011 bool) (*dhcpv4.DHCPv4, error) {
	if !c.PXE {
		return nil, nil
	}
	var rtyp dhcpv4.MessageType
	switch {
	case typ == dhcpv4.MessageTypeDiscover && !port4011:
		rtyp = dhcpv4.MessageTypeOffer
	case typ == dhcpv4.MessageTypeRequest && (port4011 || (ours && req.ServerIdentifier() != nil)):
		rtyp = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	boot := p.bootMods(c, true)
	if boot == nil {
		return nil, nil
	}
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(rtyp),
		dhcpv4.WithYourIP(net.IPv4zero),
		dhcpv4.WithServerIP(net.IP(p.serverIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(p.serverIP.AsSlice()))),
	}, boot...)
	return dhcpv4.NewReplyFromRequest(req, mods...)
}
