// Command cluster-bench measures xmppd's cross-node routing on one machine:
// three real xmppd processes (127.0.0.1-3) form a cluster, and the load
// generator (bench/loadgen) measures
//
//   - one-to-one messages/s and latency (p50/p99) with both users on the same
//     node and with the two users on different nodes, on the same cores;
//   - kill-to-unavailable: a contact on node1 of a user on node3 receives the
//     user's unavailable presence how long after node3 is SIGKILLed, and how
//     many times (must be once);
//   - a reconnect wave: N sessions on node3, node3 is SIGKILLed, every client
//     logs in again on node1 or node2 at once; seconds until all are back and
//     how many login attempts failed.
//
// Run: go run ./bench/cluster [--pairs 50 --window 10 --duration 10s --wave 5000]
// (make bench-cluster). Results: bench/results/cluster-<date>.{json,md,png}.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"xedge/bench/loadgen"
	"xedge/bench/workload"
	"xedge/internal/freeport"
)

type msgResult struct {
	Name      string  `json:"name"`
	Pairs     int     `json:"pairs"`
	Window    int     `json:"window"`
	Seconds   float64 `json:"seconds"`
	Delivered int64   `json:"delivered"`
	PerSecond float64 `json:"per_second"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

type killResult struct {
	Round       int     `json:"round"`
	Seconds     float64 `json:"seconds"` // kill to unavailable at the contact
	Unavailable int     `json:"unavailable_received"`
}

type waveResult struct {
	Sessions       int     `json:"sessions"`
	Workers        int     `json:"workers"`
	Seconds        float64 `json:"seconds_until_all_back"`
	FailedAttempts int64   `json:"failed_login_attempts"`
	NotBack        int     `json:"not_back"`
	TLS            bool    `json:"starttls"`
	InitialFailed  int64   `json:"initial_login_failed_attempts"` // logging the n sessions into node3, before the kill
}

type report struct {
	Date     string            `json:"date"`
	Host     map[string]string `json:"host"`
	Messages []msgResult       `json:"messages"`
	Ratio    float64           `json:"cross_over_same"`
	Kill     []killResult      `json:"kill_to_unavailable"`
	Waves    []waveResult      `json:"reconnect_waves,omitempty"`
	Targets  map[string]bool   `json:"targets_met"`
	Settings []string          `json:"xmppd_flags"`
}

var log = slog.New(slog.NewTextHandler(os.Stderr, nil))

var (
	logLevel = "warn"
	waveTLS  = "both"
)

func main() {
	pairs := flag.Int("pairs", 50, "chat pairs")
	window := flag.Int("window", 10, "messages in flight per pair")
	dur := flag.Duration("duration", 10*time.Second, "measurement per message series")
	rounds := flag.Int("kill-rounds", 3, "kill-to-unavailable rounds")
	wave := flag.Int("wave", 5000, "sessions in the reconnect wave (0: skip)")
	workers := flag.Int("wave-workers", 1000, "clients reconnecting at the same time")
	out := flag.String("out", "bench/results", "results directory")
	flag.StringVar(&logLevel, "log-level", logLevel, "xmppd log level")
	flag.StringVar(&waveTLS, "wave-tls", waveTLS, "reconnect wave over STARTTLS: yes, no, or both (two waves)")
	flag.Parse()
	if err := run(*pairs, *window, *dur, *rounds, *wave, *workers, *out); err != nil {
		fmt.Fprintln(os.Stderr, "cluster-bench:", err)
		os.Exit(1)
	}
}

// node is one xmppd process.
type node struct {
	name, c2s, cluster string
	args               []string
	cmd                *exec.Cmd
	logf               *os.File
	ctl, sock          string
}

func (n *node) start(bin string) error {
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = n.logf, n.logf
	if err := n.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", n.c2s, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start (see %s)", n.name, n.logf.Name())
}

func (n *node) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = syscall.Kill(n.cmd.Process.Pid, syscall.SIGKILL)
		_ = n.cmd.Wait()
	}
}

func run(pairs, window int, dur time.Duration, rounds, waveN, workers int, outDir string) error {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	tmp, err := os.MkdirTemp("", "cluster-bench-")
	if err != nil {
		return err
	}
	if os.Getenv("KEEP") == "" {
		defer os.RemoveAll(tmp)
	} else {
		log.Info("keeping the nodes' data and logs", "dir", tmp)
	}
	build := exec.Command("go", "build", "-o", tmp+"/", "./xmppd/cmd/xmppd", "./xmppd/cmd/xmppctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	bin := filepath.Join(tmp, "xmppd")
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(tmp, "cluster.key")
	os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)), 0o600)
	common := []string{"--domain", "localhost", "--c2s-tls", "", "--allow-registration", "--registration-limit", "0",
		"--c2s-shaper", "0", "--send-queue", "10000", "--c2s-require-tls=false", "--log-level", logLevel}
	var nodes []*node
	var seed string
	defer func() {
		for _, n := range nodes {
			n.kill()
		}
	}()
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		c2s, err := freeport.Addr(ip)
		if err != nil {
			return err
		}
		cluster, err := freeport.Addr(ip)
		if err != nil {
			return err
		}
		n := &node{name: fmt.Sprintf("node%d", i), c2s: c2s, cluster: cluster}
		dir := filepath.Join(tmp, n.name)
		os.MkdirAll(dir, 0o700)
		n.sock = filepath.Join(dir, "admin.sock")
		n.ctl = filepath.Join(tmp, "xmppctl")
		n.args = append([]string{"--node-name", n.name, "--data", filepath.Join(dir, "data"), "--admin-socket", n.sock,
			"--c2s", n.c2s, "--cluster-addr", n.cluster, "--cluster-key-file", keyFile,
			"--storage", fmt.Sprintf("file:%s/dev.img?size=%d", dir, 256<<20)}, common...)
		if seed != "" {
			n.args = append(n.args, "--join", seed)
		} else {
			seed = n.cluster
		}
		n.logf, _ = os.Create(filepath.Join(dir, "xmppd.log"))
		if err := n.start(bin); err != nil {
			return err
		}
		nodes = append(nodes, n)
		log.Info("node up", "node", n.name, "c2s", n.c2s, "cluster", n.cluster)
	}
	ctx := context.Background()
	t1 := &workload.Target{Name: "node1", Addr: nodes[0].c2s, Domain: "localhost", Log: log}
	if err := workload.Register(ctx, t1, "m", 2*pairs); err != nil {
		return err
	}
	if err := workload.Register(ctx, t1, "k", 2); err != nil {
		return err
	}
	time.Sleep(time.Second) // followers apply the registrations
	rep := report{Date: time.Now().UTC().Format(time.RFC3339), Host: map[string]string{
		"cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}, Targets: map[string]bool{}, Settings: common}
	same, err := chat(ctx, "same-node", nodes[0].c2s, nodes[0].c2s, pairs, window, dur)
	if err != nil {
		return err
	}
	cross, err := chat(ctx, "cross-node", nodes[0].c2s, nodes[1].c2s, pairs, window, dur)
	if err != nil {
		return err
	}
	rep.Messages = []msgResult{same, cross}
	rep.Ratio = cross.PerSecond / same.PerSecond
	rep.Targets["cross_node_at_least_half_of_same_node"] = rep.Ratio >= 0.5
	for r := 1; r <= rounds; r++ {
		k, err := killRound(ctx, r, nodes[0], nodes[2], bin)
		if err != nil {
			return err
		}
		rep.Kill = append(rep.Kill, k)
	}
	ok := len(rep.Kill) > 0
	for _, k := range rep.Kill {
		ok = ok && k.Seconds <= 2 && k.Unavailable == 1
	}
	rep.Targets["kill_to_unavailable_at_most_2s_exactly_once"] = ok
	if waveN > 0 {
		var modes []bool
		switch waveTLS {
		case "yes":
			modes = []bool{true}
		case "no":
			modes = []bool{false}
		default:
			modes = []bool{false, true}
		}
		t1 := &workload.Target{Name: "node1", Addr: nodes[0].c2s, Domain: "localhost", Log: log}
		if err := workload.Register(ctx, t1, "w", waveN); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		for i, tls := range modes {
			if i > 0 { // node3 again, for the next wave
				if err := nodes[2].start(bin); err != nil {
					return err
				}
				time.Sleep(3 * time.Second)
			}
			w, err := reconnectWave(ctx, nodes, waveN, workers, tls)
			if err != nil {
				return err
			}
			rep.Waves = append(rep.Waves, w)
			key := "reconnect_wave_no_failures_plain"
			if tls {
				key = "reconnect_wave_no_failures_starttls"
			}
			rep.Targets[key] = w.FailedAttempts == 0 && w.NotBack == 0
		}
	}
	return write(rep, outDir)
}

func bodyStamp(el []byte) (int64, bool) {
	i := bytes.Index(el, []byte("<body>"))
	if i < 0 {
		return 0, false
	}
	rest := el[i+6:]
	j := bytes.IndexByte(rest, '<')
	if j < 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return v, err == nil
}

type sender struct {
	mu sync.Mutex
	c  *loadgen.Conn
}

func (s *sender) send(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Send(b)
}

// chat runs pairs of users, A on addrA and B on addrB: A sends to B's full
// JID with window messages in flight, B answers each, each answer lets A send
// the next one; every delivery's one-way latency is recorded.
func chat(ctx context.Context, name, addrA, addrB string, pairs, window int, d time.Duration) (msgResult, error) {
	r := msgResult{Name: name, Pairs: pairs, Window: window}
	conns := make([]*loadgen.Conn, 2*pairs)
	err := workload.Parallel(ctx, 2*pairs, 50, func(ctx context.Context, i int) error {
		addr := addrA
		if i%2 == 1 {
			addr = addrB
		}
		u, p := workload.User("m", i)
		c, err := loadgen.Login(ctx, loadgen.Options{Addr: addr, Domain: "localhost", Resource: "r", Timeout: 30 * time.Second}, u, p)
		conns[i] = c
		return err
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Abort()
			}
		}
	}()
	if err != nil {
		return r, err
	}
	time.Sleep(500 * time.Millisecond) // session rows reach the other nodes
	base := time.Now()
	var counting atomic.Bool
	var delivered atomic.Int64
	var mu sync.Mutex
	var lat []int64
	msg := func(to string) []byte {
		b := []byte("<message type='chat' to='" + to + "'><body>")
		b = strconv.AppendInt(b, int64(time.Since(base)), 10)
		return append(b, "</body></message>"...)
	}
	var wg sync.WaitGroup
	for p := 0; p < pairs; p++ {
		a, b := &sender{c: conns[2*p]}, &sender{c: conns[2*p+1]}
		for _, side := range []struct{ me, peer *sender }{{a, b}, {b, a}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var local []int64
				to := side.peer.c.JID
				for {
					el, err := side.me.c.Next()
					if err != nil {
						break
					}
					if string(loadgen.Name(el)) != "message" {
						continue
					}
					ts, ok := bodyStamp(el)
					if !ok {
						continue
					}
					if counting.Load() {
						delivered.Add(1)
						if len(local) < 200000 {
							local = append(local, int64(time.Since(base))-ts)
						}
					}
					if side.me.send(msg(to)) != nil {
						break
					}
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
		}
		for range window {
			if err := a.send(msg(b.c.JID)); err != nil {
				return r, err
			}
		}
	}
	time.Sleep(time.Second) // warm-up
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(d)
	counting.Store(false)
	r.Seconds = time.Since(t0).Seconds()
	r.Delivered = delivered.Load()
	for _, c := range conns {
		c.Abort()
	}
	wg.Wait()
	r.PerSecond = float64(r.Delivered) / r.Seconds
	slices.Sort(lat)
	if len(lat) > 0 {
		r.P50Ms = float64(lat[len(lat)/2]) / 1e6
		r.P99Ms = float64(lat[len(lat)*99/100]) / 1e6
	}
	log.Info("messages", "series", name, "per_second", int(r.PerSecond), "p50_ms", r.P50Ms, "p99_ms", r.P99Ms)
	return r, nil
}

// killRound: k0 (node1) is subscribed to k1 (victim's node); the victim node is
// SIGKILLed; the time until k0 gets k1's unavailable presence, and how many
// arrive within 3 s. The victim node is restarted afterwards.
func killRound(ctx context.Context, round int, watchN, victimN *node, bin string) (killResult, error) {
	res := killResult{Round: round}
	u0, p0 := workload.User("k", 0)
	u1, p1 := workload.User("k", 1)
	opts := func(addr, r string) loadgen.Options {
		return loadgen.Options{Addr: addr, Domain: "localhost", Resource: r, Timeout: 30 * time.Second}
	}
	w, err := loadgen.Login(ctx, opts(watchN.c2s, "w"+strconv.Itoa(round)), u0, p0)
	if err != nil {
		return res, err
	}
	defer w.Abort()
	v, err := loadgen.Login(ctx, opts(victimN.c2s, "v"), u1, p1)
	if err != nil {
		return res, err
	}
	defer v.Abort()
	victim := u1 + "@localhost"
	got := make(chan time.Time, 16)
	avail := make(chan struct{}, 16)
	go func() {
		for {
			el, err := w.Next()
			if err != nil {
				return
			}
			if string(loadgen.Name(el)) != "presence" || !strings.HasPrefix(string(loadgen.Attr(el, "from")), victim+"/") {
				continue
			}
			switch string(loadgen.Attr(el, "type")) {
			case "unavailable":
				got <- time.Now()
			case "":
				avail <- struct{}{}
			}
		}
	}()
	go func() { // the victim answers the subscription request
		for {
			el, err := v.Next()
			if err != nil {
				return
			}
			if string(loadgen.Name(el)) == "presence" && string(loadgen.Attr(el, "type")) == "subscribe" {
				_ = v.Send([]byte("<presence to='" + u0 + "@localhost' type='subscribed'/>"))
			}
		}
	}()
	if err := w.Send([]byte("<presence to='" + victim + "' type='subscribe'/>")); err != nil {
		return res, err
	}
	// The victim session is not interested (no roster): approve blind as well.
	time.Sleep(200 * time.Millisecond)
	_ = v.Send([]byte("<presence to='" + u0 + "@localhost' type='subscribed'/>"))
	select {
	case <-avail:
	case <-time.After(10 * time.Second):
		return res, errors.New("kill round: the watcher never saw the victim available")
	}
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	victimN.kill()
	deadline := time.After(killed.Add(3 * time.Second).Sub(time.Now()))
	first := time.Time{}
loop:
	for {
		select {
		case at := <-got:
			res.Unavailable++
			if first.IsZero() {
				first = at
			}
		case <-deadline:
			break loop
		}
	}
	if !first.IsZero() {
		res.Seconds = first.Sub(killed).Seconds()
	} else {
		res.Seconds = -1
	}
	log.Info("kill to unavailable", "round", round, "seconds", res.Seconds, "received", res.Unavailable)
	if err := victimN.start(bin); err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second) // it rejoins and streams its rows
	return res, nil
}

// reconnectWave logs n sessions into node3, kills it, and logs every client
// into node1 or node2 at once (workers at a time), over STARTTLS.
func reconnectWave(ctx context.Context, nodes []*node, n, workers int, tls bool) (waveResult, error) {
	res := waveResult{Sessions: n, Workers: workers, TLS: tls}
	conns := make([]*loadgen.Conn, n)
	opts := func(addr string) loadgen.Options {
		return loadgen.Options{Addr: addr, Domain: "localhost", Resource: "wave", StartTLS: tls, Timeout: 60 * time.Second}
	}
	t0 := time.Now()
	var initialFailed atomic.Int64
	err := workload.Parallel(ctx, n, 100, func(ctx context.Context, i int) error {
		u, p := workload.User("w", i)
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			var c *loadgen.Conn
			if c, err = loadgen.Login(ctx, opts(nodes[2].c2s), u, p); err == nil {
				conns[i] = c
				return nil
			}
			initialFailed.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
		return err
	})
	res.InitialFailed = initialFailed.Load()
	if err != nil {
		return res, fmt.Errorf("wave: initial logins: %w", err)
	}
	log.Info("wave: sessions on node3", "n", n, "took", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	killed := time.Now()
	nodes[2].kill()
	for _, c := range conns {
		c.Abort()
	}
	var failed atomic.Int64
	var back atomic.Int64
	var wmu sync.Mutex
	var firstErr error
	_ = workload.Parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		u, p := workload.User("w", i)
		addr := nodes[i%2].c2s
		for attempt := 0; attempt < 5; attempt++ {
			c, err := loadgen.Login(ctx, opts(addr), u, p)
			if err == nil {
				conns[i] = c
				back.Add(1)
				return nil
			}
			failed.Add(1)
			wmu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			wmu.Unlock()
			time.Sleep(500 * time.Millisecond)
		}
		return nil
	})
	res.Seconds = time.Since(killed).Seconds()
	res.FailedAttempts = failed.Load()
	res.NotBack = n - int(back.Load())
	for _, c := range conns {
		if c != nil {
			c.Abort()
		}
	}
	log.Info("reconnect wave", "sessions", n, "seconds", res.Seconds, "failed_attempts", res.FailedAttempts, "not_back", res.NotBack, "first_error", firstErr)
	return res, nil
}

func write(rep report, dir string) error {
	stamp := time.Now().UTC().Format("2006-01-02T15-04Z")
	base := filepath.Join(dir, "cluster-"+stamp)
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Cluster routing benchmark, %s\n\n", rep.Date)
	fmt.Fprintf(&md, "Three xmppd processes on 127.0.0.1-3 of one %s-CPU host, the load generator on the same cores (`go run ./bench/cluster`).\n\n", rep.Host["cpus"])
	fmt.Fprintf(&md, "| messages | pairs × window | msg/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n")
	for _, m := range rep.Messages {
		fmt.Fprintf(&md, "| %s | %d × %d | %.0f | %.2f | %.2f |\n", m.Name, m.Pairs, m.Window, m.PerSecond, m.P50Ms, m.P99Ms)
	}
	fmt.Fprintf(&md, "\nCross-node / same-node throughput: **%.2f** (target ≥ 0.5).\n\n", rep.Ratio)
	fmt.Fprintf(&md, "| kill round | kill → unavailable (s) | unavailable received |\n|---|---|---|\n")
	for _, k := range rep.Kill {
		fmt.Fprintf(&md, "| %d | %.3f | %d |\n", k.Round, k.Seconds, k.Unavailable)
	}
	for _, w := range rep.Waves {
		tls := "STARTTLS + SCRAM"
		if !w.TLS {
			tls = "SCRAM without TLS"
		}
		fmt.Fprintf(&md, "\nReconnect wave: %d sessions of a SIGKILLed node back on the two others (%s, %d clients at a time) in **%.2f s**; failed login attempts: **%d** (retried; the initial logins before the kill: %d); not back: %d.\n",
			w.Sessions, tls, w.Workers, w.Seconds, w.FailedAttempts, w.InitialFailed, w.NotBack)
	}
	fmt.Fprintf(&md, "\nTargets: ")
	keys := make([]string, 0, len(rep.Targets))
	for k := range rep.Targets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&md, "%s=%v; ", k, rep.Targets[k])
	}
	fmt.Fprintf(&md, "\n\nxmppd flags besides the cluster ones: `%s`\n", strings.Join(rep.Settings, " "))
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	plot := exec.Command("/usr/bin/python3", "-c", plotPy, base+".json", base+".png")
	plot.Stdout, plot.Stderr = io.Discard, os.Stderr
	if err := plot.Run(); err != nil {
		log.Warn("no chart (python3-matplotlib?)", "err", err)
	}
	fmt.Println(md.String())
	fmt.Println("results:", base+".{json,md,png}")
	return nil
}

const plotPy = `
import json, sys
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(1, 3, figsize=(13, 4))
names = [m['name'] for m in r['messages']]
ax[0].bar(names, [m['per_second'] for m in r['messages']], color=['#4c72b0', '#dd8452'])
ax[0].set_title('messages/s (ratio %.2f)' % r['cross_over_same'])
ax[1].bar(names, [m['p99_ms'] for m in r['messages']], color=['#4c72b0', '#dd8452'])
ax[1].set_title('p99 latency (ms)')
ks = r.get('kill_to_unavailable') or []
labels = ['kill %d' % k['round'] for k in ks]
vals = [k['seconds'] for k in ks]
for w in r.get('reconnect_waves') or []:
    labels.append('wave %d%s' % (w['sessions'], ' TLS' if w['starttls'] else ''))
    vals.append(w['seconds_until_all_back'])
ax[2].bar(labels, vals, color='#55a868')
ax[2].axhline(2, color='red', linestyle='--', linewidth=1)
ax[2].set_title('seconds (kill to unavailable; wave back)')
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
`
