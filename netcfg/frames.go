package netcfg

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"
)

// This file builds and parses the few frames the VIP mechanics send and watch:
// gratuitous ARP (RFC 5227 announcement), unsolicited neighbour advertisement
// (RFC 4861 7.2.6), the TCP "tickle" ACK CTDB sends for connections of a lost
// node and the VIP advert (below). github.com/mdlayher/arp is not available here,
// and the frames are small.

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	arpRequest    = 1
	arpReply      = 2
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// garpFrame returns an Ethernet frame carrying a gratuitous ARP for ip from mac:
// sender and target protocol address are both ip, sent to broadcast. op is
// arpRequest (what keepalived and the kernel send) or arpReply.
func garpFrame(mac net.HardwareAddr, ip netip.Addr, op uint16) []byte {
	f := make([]byte, 14+28)
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	ip4 := ip.As4()
	copy(a[8:14], mac)
	copy(a[14:18], ip4[:])
	if op == arpReply {
		copy(a[18:24], broadcastMAC)
	} // request: target hardware address zero
	copy(a[24:28], ip4[:])
	return f
}

// arpPacket is a parsed ARP payload (IPv4 over Ethernet).
type arpPacket struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// parseARP parses an ARP payload (without the Ethernet header).
func parseARP(b []byte) (arpPacket, error) {
	if len(b) < 28 {
		return arpPacket{}, errors.New("arp: short packet")
	}
	if binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != etherTypeIPv4 || b[4] != 6 || b[5] != 4 {
		return arpPacket{}, errors.New("arp: not IPv4 over Ethernet")
	}
	return arpPacket{
		Op:        binary.BigEndian.Uint16(b[6:8]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), b[8:14]...)),
		SenderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		TargetMAC: net.HardwareAddr(append([]byte(nil), b[18:24]...)),
		TargetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}, nil
}

// unsolicitedNA returns an ICMPv6 neighbour advertisement for target with the
// override flag and a target link-layer address option (the kernel fills the
// checksum on a raw ICMPv6 socket).
func unsolicitedNA(mac net.HardwareAddr, target netip.Addr) []byte {
	m := make([]byte, 24+8)
	m[0] = 136  // neighbour advertisement
	m[4] = 0x20 // O (override); not R, not S
	t := target.As16()
	copy(m[8:24], t[:])
	m[24], m[25] = 2, 1 // target link-layer address, 8 bytes
	copy(m[26:32], mac)
	return m
}

// parseNA returns the target and target link-layer address of an ICMPv6 neighbour
// advertisement (ok false for anything else).
func parseNA(b []byte) (target netip.Addr, mac net.HardwareAddr, ok bool) {
	if len(b) < 24 || b[0] != 136 {
		return netip.Addr{}, nil, false
	}
	target = netip.AddrFrom16([16]byte(b[8:24]))
	for o := b[24:]; len(o) >= 8; {
		l := int(o[1]) * 8
		if l == 0 || l > len(o) {
			break
		}
		if o[0] == 2 && l >= 8 {
			mac = net.HardwareAddr(append([]byte(nil), o[2:8]...))
		}
		o = o[l:]
	}
	return target, mac, true
}

// Conn is one TCP connection as the VIP holder sees it: Local is the VIP side.
type Conn struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
}

// tickle returns a complete IP packet (IPv4 or IPv6 header plus TCP header) from
// c.Local to c.Remote with the ACK flag (and RST if rst), sequence seq and
// acknowledgement ack, with valid checksums. A client that receives an ACK outside
// its window answers with its own ACK (RFC 793/5961), which reaches the new VIP
// holder; that kernel knows no such connection and resets it, so the client
// learns at once that its connection is gone.
func tickle(c Conn, seq, ack uint32, rst bool) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:2], c.Local.Port())
	binary.BigEndian.PutUint16(tcp[2:4], c.Remote.Port())
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	if rst {
		tcp[13] |= 0x04
	}
	binary.BigEndian.PutUint16(tcp[14:16], 1234) // window
	src, dst := c.Local.Addr(), c.Remote.Addr()
	if src.Is4() {
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(tcp)))
		ip[6] = 0x40 // don't fragment
		ip[8] = 64
		ip[9] = 6
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		binary.BigEndian.PutUint16(ip[10:12], checksum(ip, 0))
		pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 6, 0, byte(len(tcp)))
		binary.BigEndian.PutUint16(tcp[16:18], checksum(tcp, sum(pseudo)))
		return append(ip, tcp...)
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(tcp)))
	ip[6] = 6
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 0, 0, byte(len(tcp)), 0, 0, 0, 6)
	binary.BigEndian.PutUint16(tcp[16:18], checksum(tcp, sum(pseudo)))
	return append(ip, tcp...)
}

// sum is the 32-bit one's-complement partial sum of b (RFC 1071).
func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// checksum folds sum(b)+initial into the Internet checksum.
func checksum(b []byte, initial uint32) uint16 {
	s := initial + sum(b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// The VIP advert: a heartbeat each node with VIP mechanics sends on the VIP
// interface (what VRRP's advertisement is to keepalived), so a backup notices a
// dead holder within a few advert intervals instead of waiting for the
// cluster's failure detection. It is an Ethernet broadcast of the IEEE 802
// local experimental EtherType, never routed and not seen by iptables; the
// payload is authenticated with a key derived from the cluster key, so other
// clusters on the segment and forged frames are ignored.
//
//	0   4  magic "XVA1"
//	4   2  interval in milliseconds
//	6   4  sequence number
//	10  1  length n of the node name
//	11  n  node name
//	11+n 16 HMAC-SHA256 (truncated) of bytes 0..11+n
const (
	etherTypeAdvert = 0x88b5
	advertMagic     = "XVA1"
	advertMACLen    = 16
)

// Advert is one heartbeat received from another node.
type Advert struct {
	Node     string
	Interval time.Duration // the sender's advert interval
	Seq      uint32
	From     net.HardwareAddr
	At       time.Time // when this node read it
}

// AdvertKey derives the advert authentication key from the cluster key.
func AdvertKey(clusterKey []byte) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("xedge vip advert v1"))
	return m.Sum(nil)
}

// advertFrame returns the broadcast Ethernet frame carrying node's advert.
func advertFrame(mac net.HardwareAddr, key []byte, node string, interval time.Duration, seq uint32) []byte {
	if len(node) > 255 {
		node = node[:255]
	}
	ms := min(interval.Milliseconds(), 65535)
	f := make([]byte, 14, 14+11+len(node)+advertMACLen)
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:14], etherTypeAdvert)
	f = append(f, advertMagic...)
	f = binary.BigEndian.AppendUint16(f, uint16(ms))
	f = binary.BigEndian.AppendUint32(f, seq)
	f = append(f, byte(len(node)))
	f = append(f, node...)
	m := hmac.New(sha256.New, key)
	m.Write(f[14:])
	return append(f, m.Sum(nil)[:advertMACLen]...)
}

// parseAdvert checks and parses an advert payload (without the Ethernet header;
// trailing padding of short frames is ignored).
func parseAdvert(b []byte, key []byte) (Advert, error) {
	if len(b) < 11+advertMACLen || string(b[0:4]) != advertMagic {
		return Advert{}, errors.New("advert: not an advert")
	}
	n := int(b[10])
	if len(b) < 11+n+advertMACLen {
		return Advert{}, errors.New("advert: short")
	}
	m := hmac.New(sha256.New, key)
	m.Write(b[:11+n])
	if !hmac.Equal(m.Sum(nil)[:advertMACLen], b[11+n:11+n+advertMACLen]) {
		return Advert{}, errors.New("advert: bad authentication (another cluster or a forged frame)")
	}
	return Advert{
		Node:     string(b[11 : 11+n]),
		Interval: time.Duration(binary.BigEndian.Uint16(b[4:6])) * time.Millisecond,
		Seq:      binary.BigEndian.Uint32(b[6:10]),
	}, nil
}
