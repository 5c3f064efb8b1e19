// Command dns-bench measures SRV convergence: how long after a membership
// change the cluster's DNS answers change, on the embedded authoritative
// server and on a real BIND 9 primary kept current with RFC 2136 + TSIG.
//
// The membership view is discovery's StaticView (the same View type and
// Subscribe notifications gossip drives), wired to discovery/dns's publisher as
// xmppd wires it: a change notification reads the view at once, a 250 ms poll
// catches anything else. Each round removes a node from the view (a node
// declared failed or left) and puts it back (a join), and times, by querying
// every 2 ms, when the embedded server's answer and BIND's answer show the
// change. A second series turns notifications off to measure the poll bound.
// Failure detection itself (gossip declaring a killed node failed, ~1 s) comes
// before this and is measured by discovery's own tests.
//
// Run: go run ./bench/dns [--rounds 20]. Needs bind9 (named, tsig-keygen).
// Results: bench/results/dns-<date>.json and .md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"xedge/discovery"
	dnspub "xedge/discovery/dns"
	"xedge/discovery/dns/bindtest"
)

type series struct {
	Name      string    `json:"name"`
	Samples   []float64 `json:"samples_ms"`
	P50       float64   `json:"p50_ms"`
	Max       float64   `json:"max_ms"`
	Timeouts  int       `json:"timeouts"`
	TargetMax float64   `json:"target_max_ms"`
	Met       bool      `json:"target_met"`
}

type report struct {
	Date    string            `json:"date"`
	Host    map[string]string `json:"host"`
	Rounds  int               `json:"rounds"`
	Poll    string            `json:"poll"`
	BIND    string            `json:"bind"`
	Series  []series          `json:"series"`
	Summary string            `json:"summary"`
	Cluster string            `json:"cluster,omitempty"`
	// ClusterRounds are the end-to-end rounds one by one.
	ClusterRounds []map[string]any `json:"cluster_rounds,omitempty"`
}

func main() {
	rounds := flag.Int("rounds", 20, "leave/join rounds per in-process series")
	crounds := flag.Int("cluster-rounds", 10, "kill/restart rounds of the 3-process xmppd series (0: skip it)")
	out := flag.String("out", "bench/results", "directory for dns-<date>.json and .md")
	flag.Parse()
	if err := run(*rounds, *crounds, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dns-bench:", err)
		os.Exit(1)
	}
}

func member(name, addr string, port int) discovery.Member {
	return discovery.Member{Name: name, Addr: netip.AddrPortFrom(netip.MustParseAddr(addr), 7946), Status: discovery.StatusAlive,
		Tags: discovery.Tags{Role: discovery.RoleNode, C2SPort: port, C2STLSPort: port + 1, InService: true, Health: "ok", Load: 100}}
}

// toView is the same translation xmppd's DNS feature makes.
func toView(v discovery.View) dnspub.View {
	var out dnspub.View
	for _, m := range v.Members() {
		n := dnspub.Node{Name: m.Name, Addrs: []netip.Addr{m.Host()}, C2SPort: uint16(m.Tags.C2SPort), C2STLSPort: uint16(m.Tags.C2STLSPort),
			InService: m.Tags.InService, Draining: m.Tags.Draining, Load: m.Tags.Load,
			Healthy: m.Status == discovery.StatusAlive && (m.Tags.Health == "" || m.Tags.Health == "ok")}
		out.Nodes = append(out.Nodes, n)
	}
	return out
}

func run(rounds, clusterRounds int, outDir string) error {
	dir, err := os.MkdirTemp("", "dns-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := bindtest.Run(dir, "example.org")
	if b != nil {
		defer b.Stop()
	}
	if err != nil {
		return err
	}
	key, err := dnspub.LoadKeyFile(b.KeyFile)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	params := dnspub.Params{Zone: "example.org", Domain: "example.org", Self: "n1", TTL: 30, DomainAddrs: true}.Normalize()

	view := discovery.NewStaticView(member("n1", "127.0.0.11", 5222),
		member("n2", "127.0.0.12", 5232), member("n3", "127.0.0.13", 5242))
	n3 := member("n3", "127.0.0.13", 5242)

	srv := dnspub.NewServer("127.0.0.1:0", quiet)
	if err := srv.Start(context.Background()); err != nil {
		return err
	}
	defer srv.Stop(context.Background())
	pusher := dnspub.NewPusher(dnspub.PusherConfig{Server: b.Addr, Zone: "example.org", Key: key, Domain: params.Domain,
		DomainAddrs: true, HostSuffix: []string{"node.example.org", "vip.example.org"}})
	pub := dnspub.NewPublisher(dnspub.PublisherConfig{Params: params, Source: func() dnspub.View { return toView(view) },
		Server: srv, Pusher: pusher, Log: quiet})
	if err := pub.Start(context.Background()); err != nil {
		return err
	}
	defer pub.Stop(context.Background())

	var notify atomic.Bool
	notify.Store(true)
	ch, unsub := view.Subscribe()
	defer unsub()
	go func() {
		for range ch {
			if notify.Load() {
				pub.Notify()
			}
		}
	}()

	all := []string{"n1.node.example.org.", "n2.node.example.org.", "n3.node.example.org."}
	two := all[:2]
	if _, ok := waitFor(b.Addr, "tcp", all, 10*time.Second); !ok {
		return fmt.Errorf("the first push never reached BIND at %s", b.Addr)
	}

	mk := func(name string) *series { return &series{Name: name, TargetMax: 2000} }
	sLeaveSrv, sLeaveBind := mk("leave -> embedded server answer"), mk("leave -> BIND answer (RFC 2136)")
	sJoinSrv, sJoinBind := mk("join -> embedded server answer"), mk("join -> BIND answer (RFC 2136)")
	sPollSrv, sPollBind := mk("leave, no notification (poll only) -> embedded"), mk("leave, no notification (poll only) -> BIND")
	// Both answers are watched at once, each timed from the change.
	measure := func(change func(), want []string, s1, s2 *series) {
		type res struct {
			d  time.Duration
			ok bool
		}
		c1, c2 := make(chan res, 1), make(chan res, 1)
		change()
		go func() { d, ok := waitFor(srv.Addr(), "udp", want, 5*time.Second); c1 <- res{d, ok} }()
		go func() { d, ok := waitFor(b.Addr, "tcp", want, 5*time.Second); c2 <- res{d, ok} }()
		r1, r2 := <-c1, <-c2
		record(s1, r1.d, r1.ok)
		record(s2, r2.d, r2.ok)
		time.Sleep(50 * time.Millisecond) // let the publisher settle between rounds
	}
	for range rounds {
		measure(func() { view.Remove("n3") }, two, sLeaveSrv, sLeaveBind)
		measure(func() { view.Put(n3) }, all, sJoinSrv, sJoinBind)
	}
	notify.Store(false)
	for range rounds / 2 {
		measure(func() { view.Remove("n3") }, two, sPollSrv, sPollBind)
		measure(func() { view.Put(n3) }, all, &series{}, &series{})
	}

	rep := report{Date: time.Now().UTC().Format(time.RFC3339), Rounds: rounds, Poll: "250ms", BIND: b.Addr,
		Host: map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS}}
	if v, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.Host["loadavg"] = strings.TrimSpace(string(v))
	}
	met := true
	for _, s := range []*series{sLeaveSrv, sLeaveBind, sJoinSrv, sJoinBind, sPollSrv, sPollBind} {
		finish(s)
		met = met && s.Met
		rep.Series = append(rep.Series, *s)
	}
	pub.Stop(context.Background()) // the cluster series pushes to the same BIND
	if clusterRounds > 0 {
		cr, err := runCluster(clusterRounds, b.Addr, b.KeyFile, dir)
		if cr != nil {
			rep.ClusterRounds = cr.Rounds
			for _, s := range []*series{cr.Detect, cr.Served, cr.Pushed, cr.DNSServed, cr.DNSPushed, cr.Rejoin, cr.RejoinBIND} {
				finish(s)
				if s.TargetMax == 0 {
					s.Met = s.Timeouts == 0
				}
				met = met && s.Met
				rep.Series = append(rep.Series, *s)
			}
			rep.Cluster = fmt.Sprintf("3 xmppd processes (gossip, raft, dns-listen + dns-update), %d kill/restart rounds, leader killed on odd rounds: "+
				"kill -> gossip declaration p50 %.0f ms; declaration -> survivors' answers p50 %.0f ms max %.0f ms; -> BIND p50 %.0f ms max %.0f ms",
				len(cr.Rounds), cr.Detect.P50, cr.DNSServed.P50, cr.DNSServed.Max, cr.DNSPushed.P50, cr.DNSPushed.Max)
			fmt.Println(rep.Cluster)
		}
		if err != nil {
			write(rep, outDir)
			return fmt.Errorf("cluster series: %w", err)
		}
	}
	rep.Summary = fmt.Sprintf("membership change -> served SRV p50 %.1f ms max %.1f ms; -> BIND p50 %.1f ms max %.1f ms; target <= 2 s: %v",
		sLeaveSrv.P50, max(sLeaveSrv.Max, sJoinSrv.Max), sLeaveBind.P50, max(sLeaveBind.Max, sJoinBind.Max), met)
	fmt.Println(rep.Summary)
	return write(rep, outDir)
}

// record adds one sample (a timeout counts separately).
func record(s *series, d time.Duration, ok bool) {
	if !ok {
		s.Timeouts++
		return
	}
	s.Samples = append(s.Samples, float64(d.Microseconds())/1000)
}

func finish(s *series) {
	xs := slices.Clone(s.Samples)
	slices.Sort(xs)
	if len(xs) > 0 {
		s.P50, s.Max = xs[len(xs)/2], xs[len(xs)-1]
	}
	s.Met = s.Timeouts == 0 && len(xs) > 0 && s.Max <= s.TargetMax
}

// waitFor queries addr every 2 ms until the client SRV targets are want
// (bounded by within) and returns how long that took.
func waitFor(addr, netw string, want []string, within time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < within {
		if got, err := bindtest.Targets(addr, netw, "_xmpp-client._tcp.example.org."); err == nil && slices.Equal(got, want) {
			return time.Since(start), true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start), false
}

func write(rep report, outDir string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("2006-01-02T15-04Z")
	j, _ := json.MarshalIndent(rep, "", "  ")
	jf := filepath.Join(outDir, "dns-"+stamp+".json")
	if err := os.WriteFile(jf, append(j, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# SRV convergence (%s)\n\n", rep.Date)
	fmt.Fprintf(&md, "Membership change (discovery view) -> DNS answer, %d rounds, publisher poll %s, BIND 9 primary on loopback; host %v.\n\n",
		rep.Rounds, rep.Poll, rep.Host)
	fmt.Fprintln(&md, "| series | samples | p50 (ms) | max (ms) | timeouts | target max (ms) | met |")
	fmt.Fprintln(&md, "|---|---:|---:|---:|---:|---:|---|")
	for _, s := range rep.Series {
		fmt.Fprintf(&md, "| %s | %d | %.1f | %.1f | %d | %.0f | %v |\n", s.Name, len(s.Samples), s.P50, s.Max, s.Timeouts, s.TargetMax, s.Met)
	}
	fmt.Fprintf(&md, "\n%s\n", rep.Summary)
	if rep.Cluster != "" {
		fmt.Fprintf(&md, "\nEnd to end: %s.\n", rep.Cluster)
	}
	mf := filepath.Join(outDir, "dns-"+stamp+".md")
	if err := os.WriteFile(mf, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", jf, "and", mf)
	return nil
}
