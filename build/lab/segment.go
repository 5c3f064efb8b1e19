package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Segment is the host's presence on a qemu multicast L2 segment (-netdev
// socket,mcast=GROUP:PORT): qemu sends every Ethernet frame as one UDP datagram to the
// group, so a host process that joins the group sees the segment's traffic and can
// put frames on it. Without root this is how the lab offers a DHCP server on the
// segment the nodes share: Segment answers DHCP (DISCOVER/REQUEST, by MAC from a
// fixed pool) and ARP for its own address, and nothing else. It never routes: the
// nodes reach nothing beyond the segment through it.
type Segment struct {
	Group    netip.AddrPort // e.g. 230.77.0.1:24000
	ServerIP netip.Addr     // e.g. 10.77.0.1
	Prefix   netip.Prefix   // e.g. 10.77.0.0/24
	First    netip.Addr     // first address handed out
	Lease    time.Duration
	Domain   string // DHCP option 15
	// Xedge is sent as DHCP option 224 (xedge.* parameters).
	Xedge string
	// Fixed, when set, gives a MAC its address (ok=false: take one from the pool).
	Fixed func(mac net.HardwareAddr) (netip.Addr, bool)
	Log   *slog.Logger

	mac    net.HardwareAddr
	mu     sync.Mutex
	leases map[string]netip.Addr // MAC -> address
	next   netip.Addr
	rx     *net.UDPConn
	tx     *net.UDPConn
	done   chan struct{}
}

// ServerMAC is the segment server's Ethernet address.
var ServerMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x77, 0x00, 0x01}

// Start joins the group on loopback and serves until Stop or ctx ends.
func (s *Segment) Start(ctx context.Context) error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Lease == 0 {
		s.Lease = time.Hour
	}
	s.mac = ServerMAC
	s.leases = map[string]netip.Addr{}
	s.next = s.First
	lo, err := loopback()
	if err != nil {
		return err
	}
	g := net.UDPAddrFromAddrPort(s.Group)
	if s.rx, err = net.ListenMulticastUDP("udp4", lo, g); err != nil {
		return fmt.Errorf("join %s: %w", s.Group, err)
	}
	if s.tx, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, g); err != nil {
		s.rx.Close()
		return fmt.Errorf("segment sender: %w", err)
	}
	s.done = make(chan struct{})
	go func() {
		<-ctx.Done()
		s.rx.Close()
	}()
	go s.serve()
	return nil
}

// Stop leaves the segment.
func (s *Segment) Stop(ctx context.Context) error {
	if s.rx == nil {
		return nil
	}
	s.rx.Close()
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.tx.Close()
}

func (s *Segment) serve() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := s.rx.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		for _, out := range s.Handle(buf[:n]) {
			if _, err := s.tx.Write(out); err != nil {
				s.Log.Warn("segment send", "err", err)
			}
		}
	}
}

// Handle answers one frame from the segment with zero or more frames.
func (s *Segment) Handle(frame []byte) [][]byte {
	if len(frame) < 14 || net.HardwareAddr(frame[6:12]).String() == s.mac.String() {
		return nil
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case 0x0806:
		return s.arp(frame[14:])
	case 0x0800:
		return s.ipv4(frame[14:])
	}
	return nil
}

func (s *Segment) arp(p []byte) [][]byte {
	// Ethernet/IPv4 request for our address only.
	if len(p) < 28 || binary.BigEndian.Uint16(p[6:8]) != 1 || netip.AddrFrom4([4]byte(p[24:28])) != s.ServerIP {
		return nil
	}
	reply := make([]byte, 28)
	copy(reply[0:6], p[0:6]) // htype, ptype, hlen, plen
	binary.BigEndian.PutUint16(reply[6:8], 2)
	copy(reply[8:14], s.mac)
	copy(reply[14:18], p[24:28])
	copy(reply[18:24], p[8:14])
	copy(reply[24:28], p[14:18])
	return [][]byte{ether(net.HardwareAddr(p[8:14]), s.mac, 0x0806, reply)}
}

func (s *Segment) ipv4(p []byte) [][]byte {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != 17 {
		return nil
	}
	ihl := int(p[0]&0x0f) * 4
	if len(p) < ihl+8 {
		return nil
	}
	udp := p[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != 67 {
		return nil
	}
	req, err := dhcpv4.FromBytes(udp[8:])
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil
	}
	reply, err := s.dhcp(req)
	if err != nil || reply == nil {
		if err != nil {
			s.logger().Warn("segment dhcp", "err", err)
		}
		return nil
	}
	payload := udpPacket(s.ServerIP, netip.AddrFrom4([4]byte{255, 255, 255, 255}), 67, 68, reply.ToBytes())
	return [][]byte{ether(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, s.mac, 0x0800, payload)}
}

// Assigned returns the address given to mac, if any.
func (s *Segment) Assigned(mac string) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.leases[mac]
	return a, ok
}

func (s *Segment) addrFor(mac string) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.leases[mac]; ok {
		return a, nil
	}
	if s.Fixed != nil {
		if hw, err := net.ParseMAC(mac); err == nil {
			if a, ok := s.Fixed(hw); ok {
				s.leases[mac] = a
				return a, nil
			}
		}
	}
	a := s.next
	for s.pinned(a) {
		a = a.Next()
	}
	if !s.Prefix.Contains(a) || a == s.ServerIP {
		return netip.Addr{}, fmt.Errorf("segment pool %s exhausted", s.Prefix)
	}
	s.next = a.Next()
	s.leases[mac] = a
	return a, nil
}

func (s *Segment) logger() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// pinned reports whether a is handed out already (to a fixed MAC).
func (s *Segment) pinned(a netip.Addr) bool {
	for _, b := range s.leases {
		if a == b {
			return true
		}
	}
	return false
}

func (s *Segment) dhcp(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	if sid := req.ServerIdentifier(); sid != nil && !sid.IsUnspecified() && !sid.Equal(net.IP(s.ServerIP.AsSlice())) {
		return nil, nil // the client chose another server
	}
	mac := req.ClientHWAddr.String()
	addr, err := s.addrFor(mac)
	if err != nil {
		return nil, err
	}
	if typ == dhcpv4.MessageTypeAck {
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if want != nil && !want.IsUnspecified() && !want.Equal(net.IP(addr.AsSlice())) {
			return dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(s.ServerIP.AsSlice()))))
		}
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IP(addr.AsSlice())),
		dhcpv4.WithServerIP(net.IP(s.ServerIP.AsSlice())),
		dhcpv4.WithNetmask(net.CIDRMask(s.Prefix.Bits(), 32)),
		dhcpv4.WithLeaseTime(uint32(s.Lease / time.Second)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(s.ServerIP.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptHostName(hostFor(addr))),
	}
	if s.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(s.Domain)))
	}
	if s.Xedge != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(224), []byte(s.Xedge))))
	}
	s.logger().Info("segment dhcp", "type", typ, "mac", mac, "addr", addr)
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// hostFor names lab addresses: 10.77.0.(10+N) is nodeN, others lab-<last octet>.
func hostFor(a netip.Addr) string {
	if o := int(a.As4()[3]); o > 10 && o <= 90 {
		return fmt.Sprintf("node%d", o-10)
	}
	return fmt.Sprintf("lab-%d", a.As4()[3])
}

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := make([]byte, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], typ)
	copy(f[14:], payload)
	return f
}

// udpPacket builds an IPv4 + UDP packet (UDP checksum 0: allowed over IPv4).
func udpPacket(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	p := make([]byte, 28+len(data))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:20]))
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint16(p[22:24], dport)
	binary.BigEndian.PutUint16(p[24:26], uint16(8+len(data)))
	copy(p[28:], data)
	return p
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func loopback() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("interfaces: %w", err)
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback != 0 {
			return &ifs[i], nil
		}
	}
	return nil, errors.New("no loopback interface")
}
