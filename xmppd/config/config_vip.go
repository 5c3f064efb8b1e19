package config

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// VIPConfig holds the settings of edge networking: the VIP pool, the firewall, DHCP.
// Its flags, defaults and checks register themselves in init (registerFeature).
// docs/vip.md describes every key.
type VIPConfig struct {
	VIPs            string        // comma-separated pool, each ADDR/PREFIXLEN (IPv4 or IPv6); empty: no VIPs
	Interface       string        // interface that carries the VIPs
	Priority        int           // keepalived priority 1..254 (higher wins)
	Preempt         bool          // false: nopreempt
	PreemptDelay    time.Duration // wait this long after becoming eligible before preempting
	Quorum          bool          // withdraw VIPs when seeing no more than half the known members
	InService       bool          // false: a spare (member, replicates, holds no VIP)
	HandoverTimeout time.Duration // wait for the previous live holder to release a VIP
	GARPRepeat      int           // gratuitous ARPs / NAs per burst
	GARPRefresh     time.Duration // re-announce held VIPs this often (0: never)
	TickleRate      int           // tickle ACKs per second at takeover
	AddrLifetime    time.Duration // lifetime of a VIP address, refreshed while held (a dead or hung holder loses it)
	CheckInterval   time.Duration // health check period
	AdvertInterval  time.Duration // VIP advert (heartbeat) period on the VIP interface (0: none, cluster failure detection only)
	AdvertDeadMult  int           // a holder silent for this many of its advert intervals loses its VIPs
	Rise, Fall      int           // consecutive results to change a check's state
	StorageWeight   int           // priority change while storage is not durable (keepalived weight)
	TrackScript     string        // extra health check script (exit 0 = up)
	TrackWeight     int           // its weight (0: a failure is a fault)
	NotifyMaster    string        // scripts run as SCRIPT STATE VIP NODE
	NotifyBackup    string
	NotifyFault     string
	Notify          string

	// Firewall (netcfg's own iptables chains).
	Firewall             bool          // manage the firewall
	FirewallOpen         string        // ports open to all, e.g. "5222,5223,53/udp,53/tcp" (empty: the client listeners and dns-listen)
	FirewallClusterPorts string        // ports open only to the cluster subnets (empty: cluster and gossip ports)
	FirewallClusterNets  string        // cluster subnets, comma-separated (empty: the subnet of the cluster address)
	FirewallRate         int           // new connections per second and source on the open TCP ports (0: no limit)
	FirewallBurst        int           // burst above the rate (0: twice the rate)
	FirewallDropOther    bool          // drop every other inbound packet
	FirewallReconcile    time.Duration // re-check the rules this often (0: only at start)
}

// Prefixes parses the pool (Finish checked it).
func (v VIPConfig) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range strings.Split(v.VIPs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func init() {
	registerFeature(featureSettings{
		defaults: func(c *Config) {
			c.VIP = VIPConfig{Priority: 100, Preempt: true, Quorum: true, InService: true,
				HandoverTimeout: 2 * time.Second, GARPRepeat: 3, GARPRefresh: 10 * time.Second, TickleRate: 500, AddrLifetime: 3 * time.Second,
				CheckInterval: 250 * time.Millisecond, Rise: 2, Fall: 2, StorageWeight: -50,
				AdvertInterval: 200 * time.Millisecond, AdvertDeadMult: 4,
				FirewallRate: 20, FirewallDropOther: true, FirewallReconcile: 30 * time.Second}
		},
		flags: func(c *Config, fs *flag.FlagSet) {
			v := &c.VIP
			fs.StringVar(&v.VIPs, "vip", v.VIPs, "virtual IPs spread over the cluster, comma-separated ADDR/PREFIXLEN (empty: none)")
			fs.StringVar(&v.Interface, "vip-interface", v.Interface, "interface that carries the VIPs (required with --vip)")
			fs.IntVar(&v.Priority, "vip-priority", v.Priority, "VIP priority 1..254, higher wins (keepalived's priority)")
			fs.BoolVar(&v.Preempt, "vip-preempt", v.Preempt, "take VIPs from lower-priority or more loaded nodes (false: keepalived's nopreempt)")
			fs.DurationVar(&v.PreemptDelay, "vip-preempt-delay", v.PreemptDelay, "after becoming healthy, wait this long before preempting")
			fs.BoolVar(&v.Quorum, "vip-quorum", v.Quorum, "withdraw every VIP when this node sees no more than half of the known members (off only for two nodes without a witness)")
			fs.BoolVar(&v.InService, "in-service", v.InService, "take VIPs and DNS records (false: a spare that only replicates, SLB's \"no inservice\")")
			fs.DurationVar(&v.HandoverTimeout, "vip-handover-timeout", v.HandoverTimeout, "wait this long for a live previous holder to release a VIP before taking it")
			fs.IntVar(&v.GARPRepeat, "vip-garp-repeat", v.GARPRepeat, "gratuitous ARPs (unsolicited NAs) per announcement")
			fs.DurationVar(&v.GARPRefresh, "vip-garp-refresh", v.GARPRefresh, "re-announce held VIPs this often (0: never)")
			fs.IntVar(&v.TickleRate, "vip-tickle-rate", v.TickleRate, "tickle ACKs per second sent to a lost holder's clients at takeover (paces their reconnects)")
			fs.DurationVar(&v.AddrLifetime, "vip-address-lifetime", v.AddrLifetime, "kernel lifetime of a VIP address, refreshed while held: a dead or hung holder loses the address after this long (0: permanent)")
			fs.DurationVar(&v.CheckInterval, "vip-check-interval", v.CheckInterval, "health check period (c2s answering, storage, track script)")
			fs.DurationVar(&v.AdvertInterval, "vip-advert-interval", v.AdvertInterval, "send a VIP advert (heartbeat, VRRP's advertisement) on the VIP interface this often; a backup takes a holder's VIPs over once the holder's adverts stopped for vip-advert-dead-mult intervals, before the cluster declares it failed (0: no adverts, the cluster's failure detection only)")
			fs.IntVar(&v.AdvertDeadMult, "vip-advert-dead-mult", v.AdvertDeadMult, "dead interval of a VIP holder, in its advert intervals (at least 3; keepalived: 3 plus a skew)")
			fs.IntVar(&v.Rise, "vip-rise", v.Rise, "consecutive successes for a health check to go up")
			fs.IntVar(&v.Fall, "vip-fall", v.Fall, "consecutive failures for a health check to go down")
			fs.IntVar(&v.StorageWeight, "vip-storage-weight", v.StorageWeight, "priority change while storage is not durable (0: a fault)")
			fs.StringVar(&v.TrackScript, "vip-track-script", v.TrackScript, "extra health check: a script that exits 0 when healthy")
			fs.IntVar(&v.TrackWeight, "vip-track-weight", v.TrackWeight, "priority change while the track script fails (0: a fault)")
			fs.StringVar(&v.NotifyMaster, "vip-notify-master", v.NotifyMaster, "script run as SCRIPT master VIP NODE when this node takes a VIP")
			fs.StringVar(&v.NotifyBackup, "vip-notify-backup", v.NotifyBackup, "script run as SCRIPT backup VIP NODE when this node stands by for a VIP")
			fs.StringVar(&v.NotifyFault, "vip-notify-fault", v.NotifyFault, "script run as SCRIPT fault VIP NODE when this node cannot hold a VIP")
			fs.StringVar(&v.Notify, "vip-notify", v.Notify, "script run as SCRIPT STATE VIP NODE on every VIP state change")
			fs.BoolVar(&v.Firewall, "firewall", v.Firewall, "manage the node's firewall (own iptables chains XEDGE-INPUT/XEDGE-RATE; other rules untouched)")
			fs.StringVar(&v.FirewallOpen, "firewall-open", v.FirewallOpen, "ports open to every source, e.g. 5222,5223,53/udp,53/tcp (empty: the client listeners and dns-listen)")
			fs.StringVar(&v.FirewallClusterPorts, "firewall-cluster-ports", v.FirewallClusterPorts, "ports open only to the cluster subnets (empty: the cluster port and the gossip port, TCP and UDP)")
			fs.StringVar(&v.FirewallClusterNets, "firewall-cluster-subnets", v.FirewallClusterNets, "cluster subnets, comma-separated CIDRs (empty: the subnet of the cluster address)")
			fs.IntVar(&v.FirewallRate, "firewall-rate", v.FirewallRate, "new connections per second per source address on the open TCP ports (0: no limit)")
			fs.IntVar(&v.FirewallBurst, "firewall-burst", v.FirewallBurst, "burst of new connections above firewall-rate (0: twice the rate)")
			fs.BoolVar(&v.FirewallDropOther, "firewall-drop-other", v.FirewallDropOther, "drop every other inbound packet (loopback, established traffic, ICMP and DHCP replies always pass)")
			fs.DurationVar(&v.FirewallReconcile, "firewall-reconcile", v.FirewallReconcile, "re-check (and repair) the firewall rules this often (0: only at start)")
		},
		check: func(c *Config) []error {
			v := c.VIP
			var errs []error
			seen := map[netip.Addr]bool{}
			for _, s := range strings.Split(v.VIPs, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				p, err := netip.ParsePrefix(s)
				if err != nil {
					errs = append(errs, fmt.Errorf("vip: %q is not ADDR/PREFIXLEN: %w", s, err))
					continue
				}
				if seen[p.Addr()] {
					errs = append(errs, fmt.Errorf("vip: %s listed twice", p.Addr()))
				}
				seen[p.Addr()] = true
			}
			if len(seen) > 0 && v.Interface == "" {
				errs = append(errs, fmt.Errorf("vip: --vip-interface is required with --vip"))
			}
			if v.Priority < 1 || v.Priority > 254 {
				errs = append(errs, fmt.Errorf("vip-priority: %d is outside 1..254", v.Priority))
			}
			if v.Rise < 1 || v.Fall < 1 {
				errs = append(errs, fmt.Errorf("vip-rise and vip-fall must be at least 1"))
			}
			if v.AddrLifetime != 0 && v.AddrLifetime < time.Second {
				errs = append(errs, fmt.Errorf("vip-address-lifetime: at least 1s (or 0: permanent)"))
			}
			if v.AdvertInterval < 0 || (v.AdvertInterval > 0 && v.AdvertInterval < 20*time.Millisecond) || v.AdvertInterval > time.Minute {
				errs = append(errs, fmt.Errorf("vip-advert-interval: 20ms..1m (or 0: no adverts)"))
			}
			if v.AdvertInterval > 0 && v.AdvertDeadMult < 3 {
				errs = append(errs, fmt.Errorf("vip-advert-dead-mult: at least 3 (a holder may miss an advert or two without losing its VIPs)"))
			}
			if v.CheckInterval <= 0 {
				errs = append(errs, fmt.Errorf("vip-check-interval must be positive"))
			}
			for name, w := range map[string]int{"vip-storage-weight": v.StorageWeight, "vip-track-weight": v.TrackWeight} {
				if w < -253 || w > 253 {
					errs = append(errs, fmt.Errorf("%s: %d is outside -253..253", name, w))
				}
			}
			for _, c := range []struct{ name, val string }{{"firewall-open", v.FirewallOpen}, {"firewall-cluster-ports", v.FirewallClusterPorts}} {
				if err := checkPorts(c.val); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
				}
			}
			for _, s := range strings.Split(v.FirewallClusterNets, ",") {
				if s = strings.TrimSpace(s); s != "" {
					if _, err := netip.ParsePrefix(s); err != nil {
						errs = append(errs, fmt.Errorf("firewall-cluster-subnets: %q: %w", s, err))
					}
				}
			}
			if v.FirewallRate < 0 || v.FirewallBurst < 0 {
				errs = append(errs, fmt.Errorf("firewall-rate and firewall-burst must not be negative"))
			}
			return errs
		},
	})
}

// checkPorts checks a "5222,53/udp" list (the same syntax netcfg.ParsePorts reads;
// config must not import netcfg).
func checkPorts(s string) error {
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		num, proto, _ := strings.Cut(f, "/")
		if proto != "" && proto != "tcp" && proto != "udp" {
			return fmt.Errorf("%q: protocol must be tcp or udp", f)
		}
		var n int
		if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != num {
			return fmt.Errorf("%q is not a port", f)
		}
	}
	return nil
}
