package netcfg

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestReverseName(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypePTR && q.Name == "15.2.0.10.in-addr.arpa." {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: "edge7.site.example."})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	server := netip.MustParseAddrPort(pc.LocalAddr().String())
	name, err := reverseName(ctx, netip.MustParseAddr("10.0.2.15"), []netip.AddrPort{server})
	if err != nil || name != "edge7.site.example" {
		t.Fatalf("got %q %v", name, err)
	}
	if _, err := reverseName(ctx, netip.MustParseAddr("10.0.2.16"), []netip.AddrPort{server}); err == nil {
		t.Fatal("NXDOMAIN gave a name")
	}
	if _, err := ReverseName(ctx, netip.MustParseAddr("10.0.2.16"), nil); err == nil {
		t.Fatal("no servers gave a name")
	}
}
