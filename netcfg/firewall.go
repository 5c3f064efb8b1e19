package netcfg

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Firewall chains. Only these chains and one jump from INPUT are ever touched; every
// other rule and chain on the host is left alone.
const (
	ChainInput = "XEDGE-INPUT" // jumped to from INPUT (first rule)
	ChainRate  = "XEDGE-RATE"  // per-source new-connection limit for the open ports
)

// Port is a port and its protocol ("tcp" or "udp").
type Port struct {
	Proto string
	Num   uint16
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Num, p.Proto) }

// ParsePorts parses "5222,5223/tcp,53/udp" (protocol defaults to tcp).
func ParsePorts(s string) ([]Port, error) {
	var out []Port
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		num, proto, _ := strings.Cut(f, "/")
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("port %q: protocol must be tcp or udp", f)
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q: not a port number", f)
		}
		out = append(out, Port{proto, uint16(n)})
	}
	return out, nil
}

// FirewallSpec is the desired inbound policy.
type FirewallSpec struct {
	Open           []Port         // open to every source (XMPP, DNS)
	Cluster        []Port         // open only to ClusterSubnets (raft/bus, gossip); dropped from elsewhere
	ClusterSubnets []netip.Prefix // sources allowed on the cluster ports
	// RatePerSource limits new TCP connections per source address and second on the
	// open TCP ports (0: no limit); RateBurst is the burst allowed (default 2x rate).
	RatePerSource int
	RateBurst     int
	// DropOther drops every other inbound packet (loopback, established traffic,
	// ICMP and DHCP replies are always accepted). False leaves them to the rest of
	// INPUT.
	DropOther bool
}

// rules returns the desired rules of each chain for one family (4 or 6), each rule
// as iptables arguments. The first rule of ChainInput carries a comment with the
// spec's hash so a reconcile can tell whether the chain is already what it should be.
func (s FirewallSpec) rules(family int) map[string][][]string {
	icmp := "icmp"
	dhcp := []string{"-p", "udp", "--sport", "67", "--dport", "68"}
	if family == 6 {
		icmp = "ipv6-icmp"
		dhcp = []string{"-p", "udp", "--sport", "547", "--dport", "546"}
	}
	in := [][]string{
		{"-i", "lo", "-m", "comment", "--comment", "xedge " + s.hash(family), "-j", "ACCEPT"},
		{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
		{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"},
		{"-p", icmp, "-j", "ACCEPT"},
		append(dhcp, "-j", "ACCEPT"),
	}
	for _, p := range s.Open {
		port := strconv.Itoa(int(p.Num))
		if p.Proto == "tcp" && s.RatePerSource > 0 {
			in = append(in, []string{"-p", "tcp", "--dport", port, "-m", "conntrack", "--ctstate", "NEW", "-j", ChainRate})
			continue
		}
		in = append(in, []string{"-p", p.Proto, "--dport", port, "-j", "ACCEPT"})
	}
	for _, p := range s.Cluster {
		port := strconv.Itoa(int(p.Num))
		for _, sub := range s.ClusterSubnets {
			if (family == 4) != sub.Addr().Is4() {
				continue
			}
			in = append(in, []string{"-s", sub.Masked().String(), "-p", p.Proto, "--dport", port, "-j", "ACCEPT"})
		}
		in = append(in, []string{"-p", p.Proto, "--dport", port, "-j", "DROP"})
	}
	if s.DropOther {
		in = append(in, []string{"-j", "DROP"})
	}
	out := map[string][][]string{ChainInput: in}
	if s.RatePerSource > 0 {
		burst := s.RateBurst
		if burst <= 0 {
			burst = 2 * s.RatePerSource
		}
		out[ChainRate] = [][]string{
			{"-m", "hashlimit", "--hashlimit-upto", fmt.Sprintf("%d/sec", s.RatePerSource), "--hashlimit-burst", strconv.Itoa(burst),
				"--hashlimit-mode", "srcip", "--hashlimit-name", fmt.Sprintf("xedge%d", family), "-j", "ACCEPT"},
			{"-j", "DROP"},
		}
	}
	return out
}

// hash identifies the spec (per family) in the chain's first rule.
func (s FirewallSpec) hash(family int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d|%v|%v|%v|%d|%d|%v", family, s.Open, s.Cluster, s.ClusterSubnets, s.RatePerSource, s.RateBurst, s.DropOther)
	return hex.EncodeToString(h.Sum(nil))[:16]
}
