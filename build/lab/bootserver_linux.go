package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"xedge/image/pxe"
	"xedge/iscsi/tgt"
)

// BootServerOptions configure the lab's host side in root mode: the PXE server on
// the bridge (DHCP for every node, network boot for --pxe nodes) and, with Storage,
// one tgtd per node serving that node's LUN.
type BootServerOptions struct {
	Dir    string // lab dir (control socket, LUN files under nodeN/)
	Domain string
	// Kernel and Initrd are served to PXE-booting nodes (empty: DHCP only).
	Kernel, Initrd string
	// Cmdline is the kernel command line the boot script gives (image default plus
	// the lab's extra parameters).
	Cmdline string
	// Key is the cluster key handed to PXE-booted nodes with their parameters.
	Key     string
	Nodes   int
	Storage bool
	// LUNMiB is the size of each node's LUN (default 256).
	LUNMiB int
	// XmppdYAML, when set, is served as xmppd.yaml and handed to PXE-booted nodes
	// (xedge.config): the lab's timing for TCG guests.
	XmppdYAML string
	Log       *slog.Logger
}

// TCGTiming is the xmppd configuration the lab hands PXE-booted nodes by default:
// TCG guests share two host cores, so each gets a fraction of a CPU and raft's and
// the gossip's sub-second defaults see them as failed while they boot. These are
// several times the defaults; a real appliance keeps xmppd's own. Pre-vote keeps a
// follower that misses heartbeats on a busy host from deposing a live leader, so
// the heartbeat timeout need not be longer. The lease must stay shorter than the
// heartbeat timeout: a node that bootstraps a one-voter cluster stands for election
// at once by lowering its heartbeat timeout to the lease for a moment
// (storage/replicated electAtOnce); with lease = heartbeat it cannot, and waited
// a whole heartbeat timeout (2.5-5 s of every PXE cold boot) for its first election.
const TCGTiming = `# xedge lab: timing for TCG guests on a shared host
raft-heartbeat-timeout: 2500ms
raft-election-timeout: 2500ms
raft-lease-timeout: 2s
gossip-probe-interval: 1s
gossip-suspicion-mult: 4
join-timeout: 2m
`

// StorageURL is node n's LUN as xmppd's --storage / xedge.storage.
func StorageURL(n int) string {
	return fmt.Sprintf("iscsi://%s:%d/%s/1", labServerIP, targetPort(n), targetIQN(n))
}

const labServerIP = "10.77.0.1"

func targetPort(n int) int            { return 3260 + n }
func targetIQN(n int) string          { return fmt.Sprintf("iqn.2026-12.org.xedge.lab:node%d", n) }
func controlSocket(dir string) string { return filepath.Join(dir, "segment.sock") }

// labNode maps a lab MAC (52:54:00:77:01:N) to N (0: not a lab node).
func labNode(mac net.HardwareAddr) int {
	if a, ok := LabAddr(mac); ok {
		return int(a.As4()[3]) - 10
	}
	return 0
}

// ServeBoot runs the boot server until ctx ends. It must run inside the lab's
// network namespace (`ip netns exec NS xedge lab segment --boot ...`): every socket,
// and every tgtd it starts, lives there.
func ServeBoot(ctx context.Context, o BootServerOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.LUNMiB == 0 {
		o.LUNMiB = 256
	}
	params := map[string]string{}
	if o.Domain != "" {
		params["domain"] = o.Domain
	}
	if o.Key != "" {
		params["key"] = o.Key
	}
	// Settings a scenario adds for every node (e.g. a VIP pool): xmppd.extra.yaml
	// in the lab dir, written before `up`, is appended to the served xmppd.yaml.
	// The lab's own services (a VIP, DNS: `up`'s xmppd.services.yaml) come last,
	// without the keys a scenario set.
	if o.XmppdYAML != "" {
		// A scenario's keys replace the lab's (e.g. a faster gossip timing).
		if b, err := os.ReadFile(filepath.Join(o.Dir, "xmppd.extra.yaml")); err == nil {
			o.XmppdYAML = MergeYAML(string(b), o.XmppdYAML)
		}
		if b, err := os.ReadFile(filepath.Join(o.Dir, servicesFile)); err == nil {
			o.XmppdYAML = MergeYAML(o.XmppdYAML, string(b))
		}
	}
	var files map[string][]byte
	if o.XmppdYAML != "" {
		// node1 is the lab's planned bootstrapper (the others get it as seed):
		// gossip only, no subnet scan and no discovery window, so it bootstraps
		// at once instead of after a scan pass of both of its subnets (~6.5 s
		// under TCG).
		files = map[string][]byte{"xmppd.yaml": []byte(o.XmppdYAML),
			"xmppd-node1.yaml": []byte(o.XmppdYAML + "discover: serf\n")}
		params["config"] = "http://" + labServerIP + "/xmppd.yaml"
		// And a looser restart limit: on a shared host a start can time out (an
		// iSCSI login, a raft election) several times before the cluster settles.
		params["restarts"] = "10/30m"
	}
	xedgeText := ""
	if o.Domain != "" {
		xedgeText = "xedge.domain=" + o.Domain
	}
	srv, err := pxe.New(pxe.Config{
		Interface: labBridge, Mode: pxe.ModeFull, ServerIP: netip.MustParseAddr(labServerIP),
		Pool: &pxe.Pool{Prefix: netip.MustParsePrefix("10.77.0.0/24"), First: netip.MustParseAddr("10.77.0.100"),
			Last: netip.MustParseAddr("10.77.0.250"), Lease: 10 * time.Minute, Fixed: LabAddr},
		Domain: o.Domain, DHCPText: xedgeText,
		Hostname: func(a netip.Addr, _ net.HardwareAddr) string { return hostFor(a) },
		Boot: pxe.Boot{Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline, Params: params, Files: files,
			// Per box, from the lab's plan (the box itself still needs nothing): its
			// LUN, and node1 as the seed of every other node, so node1 bootstraps
			// and the rest join it whatever order they boot in. (Without seeds,
			// xmppd's discovery alone split a loaded cold boot into two clusters.)
			NodeParams: func(b pxe.BoxInfo) map[string]string {
				hw, err := net.ParseMAC(b.MAC)
				n := labNode(hw)
				if err != nil || n == 0 {
					return nil
				}
				p := map[string]string{}
				if o.Storage && n <= o.Nodes {
					p["storage"] = StorageURL(n)
				}
				if n > 1 {
					p["seeds"] = "10.77.0.11"
				} else if files != nil {
					p["config"] = "http://" + labServerIP + "/xmppd-node1.yaml"
				}
				return p
			}},
		Log: o.Log,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(sctx)
	}()
	st := &storage{dir: o.Dir, log: o.Log, daemons: map[int]*tgt.Daemon{}, state: map[int]string{}}
	defer st.stopAll()
	if o.Storage {
		for n := 1; n <= o.Nodes; n++ {
			if err := st.start(ctx, n, o.LUNMiB); err != nil {
				return err
			}
		}
	}
	_ = os.Remove(controlSocket(o.Dir))
	ln, err := net.Listen("unix", controlSocket(o.Dir))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	o.Log.Info("lab boot server up", "url", srv.URL(), "storage", o.Storage, "nodes", o.Nodes)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			out, err := st.control(ctx, strings.Fields(line), srv)
			if err != nil {
				fmt.Fprintf(c, "error: %v\n", err)
				return
			}
			fmt.Fprint(c, out)
		}()
	}
}

// storage is the lab's iSCSI side: one tgtd per node (so one node's target can be
// stopped or frozen alone), each on port 3260+N with target iqn...:nodeN, LUN 1
// backed by nodeN/lun.img.
type storage struct {
	dir     string
	log     *slog.Logger
	mu      sync.Mutex
	daemons map[int]*tgt.Daemon
	state   map[int]string // running, frozen, stopped
}

func (s *storage) start(ctx context.Context, n, mib int) error {
	ndir := filepath.Join(s.dir, fmt.Sprintf("node%d", n))
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return err
	}
	lun := filepath.Join(ndir, "lun.img")
	f, err := os.OpenFile(lun, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if fi, _ := f.Stat(); fi.Size() < int64(mib)<<20 {
		err = f.Truncate(int64(mib) << 20)
	}
	f.Close()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(ndir, "tgtd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	d, err := tgt.Start(ctx, tgt.Options{Addr: labServerIP, Port: targetPort(n), Log: logf})
	if err != nil {
		return fmt.Errorf("node%d storage: %w", n, err)
	}
	if err := d.AddTarget(1, targetIQN(n), map[int]string{1: lun}); err != nil {
		d.Kill()
		return fmt.Errorf("node%d storage: %w", n, err)
	}
	s.mu.Lock()
	s.daemons[n], s.state[n] = d, "running"
	s.mu.Unlock()
	s.log.Info("lab storage", "node", n, "portal", d.Portal, "iqn", targetIQN(n), "pid", d.Pid())
	return nil
}

func (s *storage) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.daemons {
		d.Kill()
	}
}

// control runs one control-socket command.
func (s *storage) control(ctx context.Context, args []string, srv *pxe.Server) (string, error) {
	if len(args) == 0 {
		return "", errors.New("empty command")
	}
	switch args[0] {
	case "boxes":
		var b strings.Builder
		for _, x := range srv.Boxes() {
			fmt.Fprintf(&b, "%s %s", x.MAC, x.IP)
			for _, e := range []string{"dhcp", "script", "kernel", "kernel-sent", "initrd", "initrd-sent", "params"} {
				if t, ok := x.Events[e]; ok {
					fmt.Fprintf(&b, " %s=%s", e, t.UTC().Format("15:04:05.000"))
				}
			}
			b.WriteString("\n")
		}
		return b.String(), nil
	case "pxe":
		// pxe on|off: whether the lab's server offers network boots (off: a node
		// with xedge.pxe=on boots the next box by ProxyDHCP).
		if len(args) != 2 || (args[1] != "on" && args[1] != "off") {
			return "", errors.New("usage: pxe on|off")
		}
		srv.SetBootOffers(args[1] == "on")
		return "lab boot offers " + args[1] + "\n", nil
	case "fetch":
		// fetch URL: an HTTP GET from inside the lab's namespace (tests: a node's
		// own boot server).
		if len(args) != 2 {
			return "", errors.New("usage: fetch URL")
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		resp, err := hc.Get(args[1])
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s", args[1], resp.Status)
		}
		return string(b), nil
	case "storage":
		if len(args) < 2 || len(args) > 3 {
			return "", errors.New("usage: storage stop|freeze|start|status [NODE]")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.daemons) == 0 {
			return "", errors.New("this lab has no storage (lab up --storage)")
		}
		var nodes []int
		if len(args) == 3 {
			n, err := strconv.Atoi(strings.TrimPrefix(args[2], "node"))
			if err != nil || s.daemons[n] == nil {
				return "", fmt.Errorf("no storage for %q", args[2])
			}
			nodes = []int{n}
		} else {
			for n := 1; n <= len(s.daemons); n++ {
				nodes = append(nodes, n)
			}
		}
		var b strings.Builder
		for _, n := range nodes {
			d := s.daemons[n]
			var err error
			switch args[1] {
			case "stop":
				if s.state[n] != "stopped" {
					d.Kill()
					s.state[n] = "stopped"
				}
			case "freeze":
				if s.state[n] == "running" {
					err = d.Freeze()
					s.state[n] = "frozen"
				}
			case "start":
				switch s.state[n] {
				case "frozen":
					err = d.Thaw()
				case "stopped":
					err = d.Restart(ctx)
				}
				if err == nil {
					s.state[n] = "running"
				}
			case "status":
			default:
				return "", fmt.Errorf("storage %s: want stop, freeze, start or status", args[1])
			}
			if err != nil {
				return "", fmt.Errorf("node%d: %w", n, err)
			}
			pid := 0
			if s.state[n] != "stopped" {
				pid = d.Pid()
			}
			fmt.Fprintf(&b, "node%d storage %s (%s, %s, tgtd pid %d)\n", n, s.state[n], d.Portal, targetIQN(n), pid)
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("unknown command %q", args[0])
}

// Control sends one command to a running lab's boot server and returns its answer.
func Control(dir, line string) (string, error) {
	c, err := net.DialTimeout("unix", controlSocket(dir), 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("lab boot server: %w (is a root-mode lab up?)", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	out := b.String()
	if strings.HasPrefix(out, "error: ") {
		return "", errors.New(strings.TrimSpace(strings.TrimPrefix(out, "error: ")))
	}
	return out, nil
}
