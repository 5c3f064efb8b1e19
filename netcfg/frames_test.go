package netcfg

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestGARPFrameRoundTrip(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	ip := netip.MustParseAddr("10.0.0.100")
	for _, op := range []uint16{arpRequest, arpReply} {
		f := garpFrame(mac, ip, op)
		if len(f) != 42 || !bytes.Equal(f[0:6], broadcastMAC) || !bytes.Equal(f[6:12], mac) || binary.BigEndian.Uint16(f[12:14]) != etherTypeARP {
			t.Fatalf("ethernet header % x", f[:14])
		}
		p, err := parseARP(f[14:])
		if err != nil {
			t.Fatal(err)
		}
		if p.Op != op || p.SenderIP != ip || p.TargetIP != ip || !bytes.Equal(p.SenderMAC, mac) {
			t.Fatalf("parsed %+v", p)
		}
	}
	if _, err := parseARP(make([]byte, 10)); err == nil {
		t.Fatal("short packet accepted")
	}
}

func TestNARoundTrip(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	ip := netip.MustParseAddr("fd00::100")
	m := unsolicitedNA(mac, ip)
	if m[0] != 136 || m[4]&0x20 == 0 || m[4]&0x40 != 0 {
		t.Fatalf("flags % x", m[:8])
	}
	tgt, got, ok := parseNA(m)
	if !ok || tgt != ip || !bytes.Equal(got, mac) {
		t.Fatalf("parsed %v %v %v", tgt, got, ok)
	}
	if _, _, ok := parseNA([]byte{135, 0, 0, 0}); ok {
		t.Fatal("non-NA accepted")
	}
}

// verify recomputes the checksums of a tickle packet: each must fold to zero.
func TestTickleChecksums(t *testing.T) {
	for _, c := range []Conn{
		{netip.MustParseAddrPort("10.0.0.100:5222"), netip.MustParseAddrPort("10.0.0.9:40000")},
		{netip.MustParseAddrPort("[fd00::100]:5222"), netip.MustParseAddrPort("[fd00::9]:40001")},
	} {
		p := tickle(c, 0, 0, false)
		var tcp, pseudo []byte
		if c.Local.Addr().Is4() {
			if checksum(p[:20], 0) != 0 {
				t.Fatal("ipv4 header checksum")
			}
			tcp = p[20:]
			pseudo = append(append(append([]byte{}, p[12:16]...), p[16:20]...), 0, 6, 0, byte(len(tcp)))
		} else {
			tcp = p[40:]
			pseudo = append(append(append([]byte{}, p[8:24]...), p[24:40]...), 0, 0, 0, byte(len(tcp)), 0, 0, 0, 6)
		}
		if checksum(tcp, sum(pseudo)) != 0 {
			t.Fatalf("tcp checksum wrong for %v", c)
		}
		if binary.BigEndian.Uint16(tcp[0:2]) != 5222 || tcp[13] != 0x10 {
			t.Fatalf("tcp header % x", tcp)
		}
	}
}

// A VIP advert round-trips with the cluster's key; another key (another
// cluster on the segment, a forged frame), a changed byte or a truncated frame
// is refused; minimum-size padding after it is ignored.
func TestAdvertFrame(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 7}
	key := AdvertKey([]byte("cluster key one"))
	f := advertFrame(mac, key, "node2", 250*time.Millisecond, 42)
	if !bytes.Equal(f[0:6], broadcastMAC) || !bytes.Equal(f[6:12], mac) || binary.BigEndian.Uint16(f[12:14]) != etherTypeAdvert {
		t.Fatalf("ethernet header % x", f[:14])
	}
	padded := append(append([]byte{}, f[14:]...), make([]byte, 20)...)
	a, err := parseAdvert(padded, key)
	if err != nil || a.Node != "node2" || a.Interval != 250*time.Millisecond || a.Seq != 42 {
		t.Fatalf("parsed %+v, %v", a, err)
	}
	if _, err := parseAdvert(f[14:], AdvertKey([]byte("cluster key two"))); err == nil {
		t.Fatal("advert of another cluster accepted")
	}
	bad := append([]byte{}, f[14:]...)
	bad[7] ^= 1
	if _, err := parseAdvert(bad, key); err == nil {
		t.Fatal("altered advert accepted")
	}
	if _, err := parseAdvert(f[14:len(f)-1], key); err == nil {
		t.Fatal("truncated advert accepted")
	}
	if _, err := parseAdvert(make([]byte, 40), key); err == nil {
		t.Fatal("zeros accepted")
	}
}
