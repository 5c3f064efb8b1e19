package dns

import (
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Zone is an immutable snapshot of the records served for one zone, with its
// SOA. The Server swaps whole zones, so a query never sees half a change.
type Zone struct {
	Apex   string
	Serial uint32
	SOA    *mdns.SOA
	names  map[string]map[uint16][]mdns.RR // owner -> type -> RRset
	exists map[string]bool                 // owners and empty non-terminals
	all    []mdns.RR
}

// NextSerial returns the serial after prev: the current Unix time when that is
// larger (serials survive restarts and look alike on every node), else prev+1.
// Serial arithmetic is RFC 1982's, so the wrap in 2106 is fine too.
func NextSerial(prev uint32, now time.Time) uint32 {
	t := uint32(now.Unix())
	if int32(t-prev) > 0 {
		return t
	}
	return prev + 1
}

// NewZone builds a zone at apex from rrs (records outside apex are dropped),
// adding the SOA with serial. mname is the primary name server (the first NS
// when empty).
func NewZone(apex string, serial uint32, ttl uint32, mbox string, rrs []mdns.RR) *Zone {
	apex = canon(apex)
	z := &Zone{Apex: apex, Serial: serial, names: map[string]map[uint16][]mdns.RR{}, exists: map[string]bool{}}
	mname := ""
	for _, rr := range rrs {
		if ns, ok := rr.(*mdns.NS); ok && canon(ns.Hdr.Name) == apex && (mname == "" || ns.Ns < mname) {
			mname = ns.Ns
		}
	}
	if mname == "" {
		mname = "ns." + apex
	}
	z.SOA = &mdns.SOA{Hdr: mdns.RR_Header{Name: apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
		Ns: mname, Mbox: mbox, Serial: serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl}
	for i, rr := range append([]mdns.RR{z.SOA}, rrs...) {
		if i > 0 {
			rr = mdns.Copy(rr) // the zone is immutable: own its records
		}
		name := canon(rr.Header().Name)
		if !mdns.IsSubDomain(apex, name) {
			continue
		}
		rr.Header().Name = name
		if z.names[name] == nil {
			z.names[name] = map[uint16][]mdns.RR{}
		}
		t := rr.Header().Rrtype
		z.names[name][t] = append(z.names[name][t], rr)
		z.all = append(z.all, rr)
		// The owner and every name between it and the apex exist (RFC 8020:
		// an empty non-terminal answers NODATA, never NXDOMAIN).
		for n := name; ; {
			z.exists[n] = true
			if n == apex {
				break
			}
			i, _ := mdns.NextLabel(n, 0)
			n = n[i:]
		}
	}
	return z
}

// Records returns every record of the zone, SOA first.
func (z *Zone) Records() []mdns.RR { return z.all }

// RRset returns the records of name and type (nil if none).
func (z *Zone) RRset(name string, t uint16) []mdns.RR { return z.names[canon(name)][t] }

// Answer fills reply m (already SetReply'd to the question) for q: the answer,
// authority and additional sections and the rcode. It reports false when q is
// outside the zone (the caller refuses it).
func (z *Zone) Answer(m *mdns.Msg, q mdns.Question) bool {
	name := canon(q.Name)
	if !mdns.IsSubDomain(z.Apex, name) {
		return false
	}
	m.Authoritative = true
	sets := z.names[name]
	var ans []mdns.RR
	switch q.Qtype {
	case mdns.TypeANY:
		for _, rrs := range sets {
			ans = append(ans, rrs...)
		}
		sortRRs(ans)
	default:
		ans = sets[q.Qtype]
	}
	switch {
	case len(ans) > 0:
		for _, rr := range ans {
			c := mdns.Copy(rr)
			c.Header().Name = q.Name // echo the query's spelling (0x20 case randomisation)
			m.Answer = append(m.Answer, c)
		}
		if q.Qtype == mdns.TypeSRV {
			orderSRV(m.Answer)
		}
		if q.Qtype == mdns.TypeNS || q.Qtype == mdns.TypeSRV || q.Qtype == mdns.TypeANY {
			z.glue(m)
		}
	case z.exists[name]:
		m.Ns = append(m.Ns, z.SOA) // NODATA
	default:
		m.Rcode = mdns.RcodeNameError
		m.Ns = append(m.Ns, z.SOA)
	}
	return true
}

// glue adds the A/AAAA records of in-zone SRV targets and NS hosts.
func (z *Zone) glue(m *mdns.Msg) {
	seen := map[string]bool{}
	for _, rr := range m.Answer {
		var host string
		switch r := rr.(type) {
		case *mdns.SRV:
			host = r.Target
		case *mdns.NS:
			host = r.Ns
		default:
			continue
		}
		host = strings.ToLower(host)
		if seen[host] {
			continue
		}
		seen[host] = true
		m.Extra = append(m.Extra, z.names[host][mdns.TypeA]...)
		m.Extra = append(m.Extra, z.names[host][mdns.TypeAAAA]...)
	}
}
