// Package vipfailover measures VIP failover between xmppd nodes: three clustered
// xmppd processes, each in a network namespace of its own on one bridged segment
// with a client namespace, share one VIP. A client logged in through the VIP sits
// idle; the VIP holder is killed like a box losing power (its link goes down, then
// xmppd gets SIGKILL, so no FIN reaches the client); the figure is the time from the
// kill until the client is served again: its dead connection failed (tickle ACK from
// the new holder, answered by a reset), it reconnected to the VIP, logged in (SCRAM,
// bind, presence) and got a ping answered. The killed node is restarted and rejoins
// before the next kill. The client namespace's neighbour entry for the VIP must
// name the new holder's MAC after every kill.
//
// It needs root (network namespaces) and builds xmppd and xmppctl itself unless
// given paths. It must not be imported by runtime code.
package vipfailover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"xedge/bench/loadgen"
	"xedge/iscsi/tgt"
)

// Options configure a run.
type Options struct {
	Kills  int       // kills to measure (default 20)
	Xmppd  string    // xmppd binary (empty: built into Dir)
	Xmppct string    // xmppctl binary (empty: built into Dir)
	Dir    string    // work directory (data dirs, logs, binaries); required
	Log    io.Writer // progress (nil: discarded)
	// Extra xmppd flags for every node (e.g. tuning).
	Extra []string
	// Resume also measures XEP-0198 resumption through the VIP under messages
	// from a client on a surviving node (see Kill.Resumed).
	Resume bool
	// Spare names a node started with --in-service=false (used by the spare test).
	Spare string
	// Pool, when set, replaces the one VIP with this pool (ADDR/PREFIX each);
	// setup then does not wait for a single holder (used by the pool test).
	Pool []string
	// Hang freezes the holder (SIGSTOP, link left up: CTDB's hung node, which its
	// kernel keeps answering for) instead of killing it like a power loss.
	Hang bool
	// Cut, instead of a kill, drops the holder's cluster traffic (the store and
	// bus port; gossip still flows) for this long: its peers declare it gone
	// while it is alive and holds its sessions (a false node loss). With Resume
	// the messages are accounted for after the cut healed and the nodes settled.
	Cut time.Duration
	// ISCSI names nodes whose storage (--storage) is an iSCSI LUN (a sparse
	// file in Dir) of a tgtd the harness runs in the client namespace, on the
	// bridge (tgtdPortal): one target per node, reached over the node's eth0.
	// The test makes the storage fail by freezing that tgtd (harness.tgtd).
	ISCSI []string
	// NodeExtra adds xmppd flags for one node (by name), after Extra: e.g. a
	// higher --vip-priority for the keepalived master.
	NodeExtra map[string][]string
}

// Kill is one measured failover.
type Kill struct {
	Killed    string  `json:"killed"`
	NewHolder string  `json:"new_holder"`
	Detect    float64 `json:"detect_s"`  // kill -> the idle client's old connection failed
	Resumed   float64 `json:"resumed_s"` // kill -> XEP-0198 session resumed through the VIP, ping answered
	Served    float64 `json:"served_s"`  // kill -> a second client logged in afresh through the VIP, ping answered
	Neighbour string  `json:"neighbour_mac"`
	Attempts  int     `json:"reconnect_attempts"` // fresh logins tried
	Resumes   int     `json:"resume_attempts"`    // resumptions tried
	// Reresumes counts the resumptions after the measured one, before the
	// messages were accounted (the connection failed again: a VIP that moved
	// once more, a loaded node), as a client resumes whenever it must.
	Reresumes int `json:"reresumes,omitempty"`
	// Messages sent to the resuming client by a client on a surviving node from
	// before the kill until after the resumption: sent, acknowledged by the
	// server (XEP-0198 <a h=.../>), received by the resuming client (distinct
	// bodies of acknowledged messages), received more than once.
	MsgSent     int `json:"msgs_sent"`
	MsgAcked    int `json:"msgs_acked"`
	MsgReceived int `json:"msgs_received"`
	MsgDups     int `json:"msgs_duplicated"`
	// Acknowledged messages that did not reach the resumed session but the user's
	// offline storage (delivered to a later login with presence): the server routed
	// them while the session's node was gone and before the client resumed.
	MsgOffline int `json:"msgs_offline"`
	// Acknowledged messages that reached neither (lost).
	MsgLost int `json:"msgs_lost"`
	// Of the lost, those the server returned to the sender as errors.
	MsgBounced int `json:"msgs_bounced,omitempty"`
	// Error, in cut mode, is why this failover failed (the run goes on).
	Error string `json:"error,omitempty"`
}

// Result is a run's outcome.
type Result struct {
	Started     time.Time `json:"started"`
	Nodes       int       `json:"nodes"`
	VIP         string    `json:"vip"`
	Kills       []Kill    `json:"kills"`
	ResumedP50  float64   `json:"resumed_p50_s"`
	ResumedMax  float64   `json:"resumed_max_s"`
	ServedP50   float64   `json:"served_p50_s"`
	ServedMax   float64   `json:"served_max_s"`
	DetectP50   float64   `json:"detect_p50_s"`
	DetectMax   float64   `json:"detect_max_s"`
	Flags       []string  `json:"xmppd_flags"`
	Mode        string    `json:"mode"` // kill or hang
	Commit      string    `json:"commit,omitempty"`
	Description string    `json:"description"`
}

const (
	subnet  = "10.66.0"
	vipCIDR = subnet + ".100/24"
	vipAddr = subnet + ".100:5222"
	domain  = "vip.test"
	// tgtdPortal is the portal of the tgtd in the client namespace (Options.ISCSI).
	tgtdPortal = subnet + ".9:3260"
)

type node struct {
	name string
	ns   string
	ip   string
	mac  string
	data string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

type harness struct {
	opt    Options
	prefix string
	nodes  []*node
	client netns.NsHandle
	flags  []string
	key    string
	// tgtd serves the Options.ISCSI nodes' LUNs from the client namespace; it
	// was started from a thread in that namespace (tgtdQuit ends the thread:
	// tgtd's parent-death signal is tied to it, so it lives as long as tgtd).
	tgtd     *tgt.Daemon
	tgtdQuit chan struct{}
	tgtdDone chan struct{}
}

func (h *harness) logf(format string, args ...any) {
	if h.opt.Log != nil {
		fmt.Fprintf(h.opt.Log, format+"\n", args...)
	}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Run sets up the namespaces and nodes, measures opt.Kills failovers and tears
// everything down (every process it started is stopped by PID, every namespace
// deleted).
func Run(ctx context.Context, opt Options) (*Result, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vipfailover needs root (network namespaces)")
	}
	if opt.Kills <= 0 {
		opt.Kills = 20
	}
	if opt.Dir == "" {
		return nil, errors.New("vipfailover: Options.Dir is required")
	}
	h, err := newHarness(opt)
	if err != nil {
		return nil, err
	}
	defer h.teardown()
	res := &Result{Started: time.Now().UTC(), Nodes: len(h.nodes), VIP: vipCIDR, Flags: h.flags, Mode: "kill",
		Description: "kill the VIP holder (link down, then SIGKILL: no FIN reaches the client); time until an idle client logged in through the VIP is logged in again through it and a ping is answered"}
	if opt.Hang {
		res.Mode = "hang"
		res.Description = "freeze the VIP holder (SIGSTOP; its link and kernel stay up and keep its TCP connections and, until the address lapses, the VIP); time until an idle client logged in through the VIP is logged in again through it and a ping is answered"
	}
	if opt.Cut > 0 {
		res.Mode = "cut"
		res.Description = fmt.Sprintf("cut the VIP holder's cluster traffic (store and bus port; gossip flows) for %s: its peers declare it gone while it is alive and holds its sessions (a false node loss), the VIP moves once its last row has stood for it for 3 s; time until an idle client logged in through the VIP is logged in again through it and a ping is answered", opt.Cut)
	}
	if opt.Resume {
		res.Mode += "+resume"
		res.Description += "; beside it, a client connected through the VIP with resumable XEP-0198 stream management reconnects and resumes its session (<resumed/>, then a ping answered) while a client on a surviving node sends it a message every 25 ms"
	}
	for i := 0; i < opt.Kills; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		k, err := h.killOnce(ctx, i)
		if err != nil && opt.Cut > 0 && ctx.Err() == nil {
			// A false node loss that went wrong is a result, not the end of
			// the run: recorded, and the next cut starts once the cluster
			// settled again.
			k.Error = err.Error()
			h.logf("cut %d failed: %v", i+1, err)
			res.Kills = append(res.Kills, k)
			if _, err := h.holder(90 * time.Second); err != nil {
				return res, fmt.Errorf("after cut %d: %w", i+1, err)
			}
			continue
		}
		if err != nil {
			return res, fmt.Errorf("kill %d: %w", i+1, err)
		}
		h.logf("kill %2d: %s -> %s  detect %.3f s  served %.3f s  (neighbour %s, %d attempts)", i+1, k.Killed, k.NewHolder, k.Detect, k.Served, k.Neighbour, k.Attempts)
		if opt.Resume {
			h.logf("         resumed %.3f s (%d attempts); messages sent %d acked %d received %d duplicated %d offline %d lost %d (bounced %d)",
				k.Resumed, k.Resumes, k.MsgSent, k.MsgAcked, k.MsgReceived, k.MsgDups, k.MsgOffline, k.MsgLost, k.MsgBounced)
		}
		res.Kills = append(res.Kills, k)
	}
	var served, detect, resumed []float64
	for _, k := range res.Kills {
		if k.Error != "" {
			continue
		}
		served = append(served, k.Served)
		detect = append(detect, k.Detect)
		resumed = append(resumed, k.Resumed)
	}
	if len(served) == 0 {
		return res, nil
	}
	if opt.Resume {
		res.ResumedP50, res.ResumedMax = p50(resumed), slices.Max(resumed)
	}
	res.ServedP50, res.ServedMax = p50(served), slices.Max(served)
	res.DetectP50, res.DetectMax = p50(detect), slices.Max(detect)
	return res, nil
}

// newHarness builds the binaries if needed and sets up the namespaces and the three
// nodes; the caller tears it down (also on error, when h is not nil).
func newHarness(opt Options) (*harness, error) {
	if err := build(&opt); err != nil {
		return nil, err
	}
	h := &harness{opt: opt, prefix: fmt.Sprintf("xvipf%d", os.Getpid()%100000)}
	if err := h.setup(); err != nil {
		h.teardown()
		return nil, err
	}
	return h, nil
}

func p50(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func build(opt *Options) error {
	for _, b := range []struct {
		path *string
		pkg  string
	}{{&opt.Xmppd, "xedge/xmppd/cmd/xmppd"}, {&opt.Xmppct, "xedge/xmppd/cmd/xmppctl"}} {
		if *b.path != "" {
			continue
		}
		out := filepath.Join(opt.Dir, filepath.Base(b.pkg))
		if o, err := exec.Command("go", "build", "-o", out, b.pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v: %s", b.pkg, err, o)
		}
		*b.path = out
	}
	return nil
}

func (h *harness) setup() error {
	c := h.prefix + "-c"
	for _, n := range []string{"c", "n1", "n2", "n3"} {
		exec.Command("ip", "netns", "del", h.prefix+"-"+n).Run()
	}
	steps := [][]string{
		{"netns", "add", c},
		{"-n", c, "link", "set", "lo", "up"},
		{"-n", c, "link", "add", "br0", "type", "bridge"},
		{"-n", c, "addr", "add", subnet + ".9/24", "dev", "br0"},
		{"-n", c, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	var err error
	if h.client, err = netns.GetFromName(c); err != nil {
		return err
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(rand.IntN(256))
	}
	h.key = filepath.Join(h.opt.Dir, "cluster.key")
	if err := os.WriteFile(h.key, []byte(fmt.Sprintf("%x", key)), 0o600); err != nil {
		return err
	}
	if len(h.opt.ISCSI) > 0 {
		if err := h.startTgtd(); err != nil {
			return err
		}
	}
	pool := vipCIDR
	if len(h.opt.Pool) > 0 {
		pool = strings.Join(h.opt.Pool, ",")
	}
	h.flags = append([]string{"--domain", domain, "--c2s", "0.0.0.0:5222", "--c2s-tls", "", "--c2s-require-tls=false",
		"--vip", pool, "--vip-interface", "eth0", "--leave-on-stop=false"}, h.opt.Extra...)
	if h.opt.Cut > 0 {
		// Messages for the session while its node is cut off go to offline storage
		// until it is resumed (seconds at 40 messages/s): room for all of them.
		h.flags = append(h.flags, "--max-offline", "10000")
	}
	for i := 1; i <= 3; i++ {
		n := &node{name: fmt.Sprintf("n%d", i), ns: fmt.Sprintf("%s-n%d", h.prefix, i), ip: fmt.Sprintf("%s.%d", subnet, i),
			mac: fmt.Sprintf("02:00:00:00:00:%02x", i), data: filepath.Join(h.opt.Dir, fmt.Sprintf("n%d", i))}
		for _, s := range [][]string{
			{"netns", "add", n.ns},
			{"-n", c, "link", "add", "v" + n.name, "type", "veth", "peer", "name", "eth0", "netns", n.ns},
			{"-n", c, "link", "set", "v" + n.name, "master", "br0", "up"},
			{"-n", n.ns, "link", "set", "lo", "up"},
			{"-n", n.ns, "link", "set", "eth0", "address", n.mac},
			{"-n", n.ns, "addr", "add", n.ip + "/24", "dev", "eth0"},
			{"-n", n.ns, "link", "set", "eth0", "up"},
		} {
			if err := ip(s...); err != nil {
				return err
			}
		}
		h.nodes = append(h.nodes, n)
		if err := h.start(n); err != nil {
			return err
		}
		if err := h.waitAdmin(n, 60*time.Second); err != nil {
			return err
		}
	}
	for _, u := range []string{"bench", "fresh", "sender"} {
		if err := h.ctl(h.nodes[0], "register", u, "secret"); err != nil {
			return err
		}
	}
	if len(h.opt.Pool) > 0 {
		return nil
	}
	return h.waitSettled(60 * time.Second)
}

func (h *harness) start(n *node) error {
	args := []string{"netns", "exec", n.ns, h.opt.Xmppd, "--data", n.data, "--node-name", n.name,
		"--cluster-addr", n.ip + ":7400", "--cluster-key-file", h.key}
	switch {
	case n.cmd != nil: // a restart: every other node is a seed
		var seeds []string
		for _, o := range h.nodes {
			if o != n {
				seeds = append(seeds, o.ip+":7400")
			}
		}
		args = append(args, "--join", strings.Join(seeds, ","))
	case n.name != "n1":
		args = append(args, "--join", h.nodes[0].ip+":7400")
	}
	args = append(args, h.flags...)
	if n.name == h.opt.Spare {
		args = append(args, "--in-service=false")
	}
	if slices.Contains(h.opt.ISCSI, n.name) {
		args = append(args, "--storage", "iscsi://"+tgtdPortal+"/"+iqnOf(n.name)+"/1")
	}
	args = append(args, h.opt.NodeExtra[n.name]...)
	lf, err := os.OpenFile(filepath.Join(h.opt.Dir, n.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.cmd, n.log, n.done = cmd, lf, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(n.done)
	return nil
}

func iqnOf(node string) string { return "iqn.2025-01.org.xedge.test:vip-" + node }

// startTgtd runs tgtd in the client namespace with a 64 MiB LUN per
// Options.ISCSI node. tgt.Start checks the portal by dialing it, so it runs on
// a thread in that namespace, which lives until teardown (tgtd gets SIGKILL
// when the thread that started it ends).
func (h *harness) startTgtd() error {
	if err := tgt.Available(); err != nil {
		return fmt.Errorf("tgtd is a prerequisite (build/setup.sh test installs it): %w", err)
	}
	h.tgtdQuit, h.tgtdDone = make(chan struct{}), make(chan struct{})
	started := make(chan error, 1)
	go func() {
		defer close(h.tgtdDone)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := netns.Set(h.client); err != nil {
			started <- err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		lf, err := os.Create(filepath.Join(h.opt.Dir, "tgtd.log"))
		if err != nil {
			started <- err
			return
		}
		defer lf.Close()
		host, _, _ := strings.Cut(tgtdPortal, ":")
		d, err := tgt.Start(ctx, tgt.Options{Netns: h.prefix + "-c", Addr: host, Port: 3260, Log: lf})
		if err != nil {
			started <- err
			return
		}
		h.tgtd = d
		for i, name := range h.opt.ISCSI {
			img := filepath.Join(h.opt.Dir, "lun-"+name+".img")
			if err = os.WriteFile(img, nil, 0o600); err == nil {
				err = os.Truncate(img, 64<<20)
			}
			if err == nil {
				err = d.AddTarget(i+1, iqnOf(name), map[int]string{1: img})
			}
			if err != nil {
				break
			}
		}
		started <- err
		<-h.tgtdQuit
	}()
	return <-started
}

func (h *harness) ctl(n *node, args ...string) error {
	out, err := exec.Command(h.opt.Xmppct, append([]string{"--socket", filepath.Join(n.data, "admin.sock"), "--timeout", "10s"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("xmppctl %s on %s: %v: %s", strings.Join(args, " "), n.name, err, out)
	}
	return nil
}

type vipStatus struct {
	Healthy  bool `json:"healthy"`
	Quorum   bool `json:"quorum"`
	Priority int  `json:"priority"` // this node's effective priority
	VIPs     []struct {
		VIP    string `json:"vip"`
		Holder string `json:"holder"`
		State  string `json:"state"`
	} `json:"vips"`
	Tracks []vipTrack `json:"tracks"`
	Nodes  []struct {
		Name     string `json:"name"`
		Healthy  bool   `json:"healthy"`
		Priority int    `json:"priority"`
	} `json:"nodes"`
}

// vipTrack is one health check in `xmppctl --json vip`.
type vipTrack struct {
	Name      string `json:"name"`
	Up        bool   `json:"up"`
	LastError string `json:"last_error"`
}

// track returns the health check called name (zero if there is none).
func (st vipStatus) track(name string) vipTrack {
	for _, tr := range st.Tracks {
		if tr.Name == name {
			return tr
		}
	}
	return vipTrack{}
}

// priorityOf is node name's effective priority in this view (0: not in it).
func (st vipStatus) priorityOf(name string) int {
	for _, n := range st.Nodes {
		if n.Name == name {
			return n.Priority
		}
	}
	return 0
}

func (h *harness) status(n *node) (vipStatus, error) {
	var st vipStatus
	return st, h.vipJSON(n, 2*time.Second, &st)
}

// vipJSON decodes `xmppctl --json vip` of n into v (each caller reads the
// fields it needs).
func (h *harness) vipJSON(n *node, timeout time.Duration, v any) error {
	out, err := exec.Command(h.opt.Xmppct, "--socket", filepath.Join(n.data, "admin.sock"), "--timeout", timeout.String(), "--json", "vip").Output()
	if err != nil {
		return err
	}
	return json.Unmarshal(out, v)
}

func (h *harness) waitAdmin(n *node, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := h.status(n); err == nil {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s exited during start (log %s)", n.name, n.log.Name())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not answering after %s", n.name, d)
}

// waitSettled waits until every node is healthy in every node's view and all agree
// on one holder that holds the VIP; it returns that holder.
func (h *harness) waitSettled(d time.Duration) error {
	_, err := h.holder(d)
	return err
}

func (h *harness) holder(d time.Duration) (*node, error) {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		holders := map[string]bool{}
		ok := true
		for _, n := range h.nodes {
			st, err := h.status(n)
			if err != nil || !st.Healthy || len(st.VIPs) != 1 || len(st.Nodes) != len(h.nodes) {
				ok = false
				last = fmt.Sprintf("%s: %v %+v", n.name, err, st)
				break
			}
			for _, v := range st.Nodes {
				if !v.Healthy {
					ok = false
					last = fmt.Sprintf("%s sees %s unhealthy: %+v", n.name, v.Name, st)
				}
			}
			holders[st.VIPs[0].Holder] = true
		}
		if ok && len(holders) != 1 {
			last = fmt.Sprintf("holders %v", slices.Sorted(maps.Keys(holders)))
		}
		if ok && len(holders) == 1 {
			for _, n := range h.nodes {
				if holders[n.name] {
					st, _ := h.status(n)
					if len(st.VIPs) == 1 && st.VIPs[0].State == "master" {
						return n, nil
					}
					last = fmt.Sprintf("holder %s not master: %+v", n.name, st)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("cluster did not settle on one VIP holder in %s (last: %s)", d, last)
}

// inClient runs f on a thread in the client namespace (sockets made there belong to it).
func (h *harness) inClient(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(h.client); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

func (h *harness) login(timeout time.Duration) (*loadgen.Conn, error) {
	var c *loadgen.Conn
	err := h.inClient(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		c, err = loadgen.Login(ctx, loadgen.Options{Addr: vipAddr, Domain: domain, Timeout: timeout, Resource: "r"}, "fresh", "secret")
		return err
	})
	return c, err
}

func (h *harness) neighbour() string {
	out, _ := exec.Command("ip", "-n", h.prefix+"-c", "neigh", "show", subnet+".100").Output()
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func (h *harness) killOnce(ctx context.Context, i int) (Kill, error) {
	victim, err := h.holder(90 * time.Second)
	if err != nil {
		return Kill{}, err
	}
	c, err := h.login(10 * time.Second)
	if err != nil {
		return Kill{}, fmt.Errorf("login through the VIP: %w", err)
	}
	defer c.Abort()
	var sm *smRun
	if h.opt.Resume {
		if sm, err = h.startSM(victim, i); err != nil {
			return Kill{}, err
		}
		defer sm.stop()
	}
	// Let the holder publish the connections (its rows are refreshed every second).
	time.Sleep(2500 * time.Millisecond)
	failed := make(chan time.Time, 1)
	go func() {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		for {
			if _, err := c.Next(); err != nil {
				failed <- time.Now()
				return
			}
		}
	}()
	t0 := time.Now()
	var healed chan struct{}
	if h.opt.Cut > 0 {
		if err := cutCluster(victim, "-A"); err != nil {
			return Kill{}, err
		}
		healed = make(chan struct{})
		defer func() { <-healed }() // also on an error: the next cut starts healed
		go func() {
			defer close(healed)
			time.Sleep(h.opt.Cut)
			if err := cutCluster(victim, "-D"); err != nil {
				h.logf("healing the cut of %s: %v", victim.name, err)
			}
		}()
		if sm != nil {
			// The accounting waits for the cut to heal and the nodes to settle
			// (the node cut off gives the session up, what it queued is rerouted).
			sm.settle = func() {
				<-healed
				if _, err := h.holder(60 * time.Second); err != nil {
					h.logf("kill %d: after the heal: %v", i+1, err)
				}
				time.Sleep(2 * time.Second)
			}
		}
	} else if h.opt.Hang {
		victim.cmd.Process.Signal(syscall.SIGSTOP)
	} else {
		if err := ip("-n", victim.ns, "link", "set", "eth0", "down"); err != nil {
			return Kill{}, err
		}
		victim.cmd.Process.Kill()
		<-victim.done
		victim.log.Close()
	}
	k := Kill{Killed: victim.name}
	// The fresh login (beside the resumption, if measured).
	fresh := make(chan error, 1)
	go func() {
		select {
		case detected := <-failed:
			k.Detect = detected.Sub(t0).Seconds()
		case <-time.After(30 * time.Second):
			fresh <- errors.New("the client's connection did not fail within 30 s")
			return
		}
		for {
			k.Attempts++
			nc, err := h.login(time.Second)
			if err == nil {
				k.Served = time.Since(t0).Seconds()
				nc.Close()
				fresh <- nil
				return
			}
			if time.Since(t0) > 30*time.Second {
				fresh <- fmt.Errorf("not served again within 30 s: %w", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	if sm != nil {
		if err := sm.measure(&k, t0, i); err != nil {
			<-fresh
			return k, err
		}
	}
	if err := <-fresh; err != nil {
		return k, err
	}
	k.Neighbour = h.neighbour()
	for _, n := range h.nodes {
		if n.mac == k.Neighbour {
			k.NewHolder = n.name
		}
	}
	if k.NewHolder == "" || k.NewHolder == victim.name {
		return k, fmt.Errorf("the client's neighbour entry for the VIP is %q after the kill, not a survivor's MAC", k.Neighbour)
	}
	if healed != nil {
		return k, nil // the node cut off lives on: nothing to restart
	}
	// The dead node's VIP address lapses by itself (its lifetime is no longer
	// refreshed): its kernel would otherwise answer ARP for the VIP once back.
	for deadline := time.Now().Add(8 * time.Second); ; {
		out, _ := exec.Command("ip", "-n", victim.ns, "addr", "show", "dev", "eth0").Output()
		if !strings.Contains(string(out), subnet+".100/") {
			break
		}
		if time.Now().After(deadline) {
			return k, fmt.Errorf("the VIP address is still on dead %s 8 s after the kill", victim.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.opt.Hang {
		victim.cmd.Process.Kill()
		<-victim.done
		victim.log.Close()
	} else if err := ip("-n", victim.ns, "link", "set", "eth0", "up"); err != nil {
		return k, err
	}
	if err := h.start(victim); err != nil {
		return k, err
	}
	if err := h.waitAdmin(victim, 60*time.Second); err != nil {
		return k, err
	}
	return k, nil
}

// cutCluster adds (-A) or deletes (-D) the rules that drop n's cluster traffic
// on the store and bus port (7400), leaving gossip (7401) alone.
func cutCluster(n *node, op string) error {
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		for _, dir := range []string{"--dport", "--sport"} {
			if out, err := exec.Command("ip", "netns", "exec", n.ns, "iptables", op, chain, "-p", "tcp", dir, "7400", "-j", "DROP").CombinedOutput(); err != nil {
				return fmt.Errorf("iptables %s %s: %v: %s", op, chain, err, out)
			}
		}
	}
	return nil
}

func (h *harness) teardown() {
	if h.tgtd != nil {
		h.tgtd.Thaw() // a node whose storage hangs would not stop in time
	}
	// Every node is told to stop at once and given 5 s in all (one after the
	// other, each waited for, teardown took 8-11 s).
	for _, n := range h.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	grace := time.NewTimer(5 * time.Second)
	defer grace.Stop()
	expired := false
	for _, n := range h.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			if !expired {
				select {
				case <-n.done:
				case <-grace.C:
					expired = true
				}
			}
			if expired {
				select {
				case <-n.done:
				default:
					n.cmd.Process.Kill()
					<-n.done
				}
			}
		}
		if n.log != nil {
			n.log.Close()
		}
		exec.Command("ip", "netns", "del", n.ns).Run()
	}
	if h.tgtd != nil {
		h.tgtd.Stop()
	}
	if h.tgtdQuit != nil {
		close(h.tgtdQuit)
		<-h.tgtdDone
	}
	if h.client.IsOpen() {
		h.client.Close()
	}
	exec.Command("ip", "netns", "del", h.prefix+"-c").Run()
}

// Markdown renders a result as a short report.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# VIP failover (%s), %s\n\n", r.Mode, r.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "%d xmppd nodes in network namespaces on one bridge, one VIP (%s), a client in a third namespace.\n%s.\n\n", r.Nodes, r.VIP, r.Description)
	fmt.Fprintf(&b, "| figure | p50 (s) | max (s) |\n|---|---:|---:|\n")
	if strings.HasSuffix(r.Mode, "+resume") {
		fmt.Fprintf(&b, "| reconnected and XEP-0198 session resumed, ping answered | %.3f | %.3f |\n", r.ResumedP50, r.ResumedMax)
	}
	fmt.Fprintf(&b, "| served again (reconnected, logged in afresh, ping answered) | %.3f | %.3f |\n", r.ServedP50, r.ServedMax)
	fmt.Fprintf(&b, "| old connection failed at the client (tickle ACK -> reset) | %.3f | %.3f |\n\n", r.DetectP50, r.DetectMax)
	if strings.HasSuffix(r.Mode, "+resume") {
		fmt.Fprintf(&b, "Kills: %d. Target: reconnected and resumed <= 2 s. Messages: sent to the resuming client from a surviving node every 25 ms; acked = acknowledged by the sender's server (XEP-0198 <a/>); received = reached the resumed session; offline = reached the user's offline storage instead; lost = neither.\n\n", len(r.Kills))
		fmt.Fprintf(&b, "| # | killed | new holder | detect (s) | resumed (s) | fresh login (s) | sent | acked | received | duplicated | offline | lost | resumed again | neighbour MAC |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for i, k := range r.Kills {
			fmt.Fprintf(&b, "| %d | %s | %s | %.3f | %.3f | %.3f | %d | %d | %d | %d | %d | %d | %d | %s |\n", i+1, k.Killed, k.NewHolder, k.Detect, k.Resumed, k.Served, k.MsgSent, k.MsgAcked, k.MsgReceived, k.MsgDups, k.MsgOffline, k.MsgLost, k.Reresumes, k.Neighbour)
		}
		for i, k := range r.Kills {
			if k.Error != "" {
				fmt.Fprintf(&b, "\nFailover %d failed: %s\n", i+1, k.Error)
			}
		}
	} else {
		fmt.Fprintf(&b, "Kills: %d. Target: served again <= 2 s.\n\n| # | killed | new holder | detect (s) | served (s) | neighbour MAC |\n|---:|---|---|---:|---:|---|\n", len(r.Kills))
		for i, k := range r.Kills {
			fmt.Fprintf(&b, "| %d | %s | %s | %.3f | %.3f | %s |\n", i+1, k.Killed, k.NewHolder, k.Detect, k.Served, k.Neighbour)
		}
	}
	fmt.Fprintf(&b, "\nxmppd flags: `%s`\n", strings.Join(r.Flags, " "))
	return b.String()
}
