package lab

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// State is what `xedge lab` remembers between invocations (lab.json in the lab dir).
type State struct {
	Mode       string      `json:"mode"` // "mcast" (no root) or "netns" (root)
	Group      string      `json:"group,omitempty"`
	NetNS      string      `json:"netns,omitempty"`
	Domain     string      `json:"domain"`
	SegmentPID int         `json:"segment_pid"`
	Nodes      []NodeState `json:"nodes"`
	// Boot is "direct" (qemu loads the PVH kernel) or "pxe" (nodes boot from the
	// network: the lab's PXE server on the bridge).
	Boot    string `json:"boot,omitempty"`
	Storage bool   `json:"storage,omitempty"` // one iSCSI LUN per node (tgtd in the namespace)
	// Kernel, Initrd and Params are how nodes are booted (kept for AddNode).
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	Params string `json:"params,omitempty"`
	Key    bool   `json:"clustered,omitempty"` // cluster.key in the lab dir
	// VIP (address/prefix) and DNS (the embedded authoritative server on port 53
	// of every node) when `up` configured them (UpOptions.VIP, UpOptions.DNS).
	VIP string `json:"vip,omitempty"`
	DNS bool   `json:"dns,omitempty"`
}

// NodeState is one lab node.
type NodeState struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	PID  int    `json:"pid"`
	MAC  string `json:"mac"`
	Port int    `json:"c2s_port"` // 127.0.0.1:Port -> node:5222
	// Started is when qemu was started (power-on); Ready when the console first
	// showed the ready (or maintenance/quarantine) line, as seen by `up`.
	Started time.Time `json:"started"`
	Ready   time.Time `json:"ready,omitempty"`
	// ReadyCPU is the CPU time qemu had used when the node was ready: the boot's
	// cost, which unlike wall time does not grow on a busy host.
	ReadyCPU float64 `json:"ready_cpu_s,omitempty"`
}

// BootSeconds is power-on to ready as `up` saw it (0: not seen).
func (n NodeState) BootSeconds() float64 {
	if n.Ready.IsZero() {
		return 0
	}
	return n.Ready.Sub(n.Started).Seconds()
}

// UpOptions configures `xedge lab up`.
type UpOptions struct {
	Dir    string // lab state dir (out/lab)
	Kernel string
	Initrd string
	Nodes  int
	Domain string // served to nodes by DHCP option 224 (and 15)
	Mode   string // "mcast" (default) or "netns" (root: bridge and taps in a namespace)
	Params string // extra kernel parameters for every node
	// ClusterKey, when set, makes the nodes one xmppd cluster: every node gets
	// xedge.key, nodes 2..N also xedge.seeds=<node1's address> (node1 bootstraps).
	ClusterKey string
	Self       []string // argv to run this tool's hidden `lab segment` server
	MaxBoot    int      // nodes booting at once (2 on a 2-core host)
	// PXE boots the nodes from the network (root mode only): PXEKernel (bzImage)
	// and PXEInitrd (initramfs.cpio.xz) are served by the lab's PXE server, which
	// also hands every node the cluster key (ClusterKey, or a random one) and seeds.
	PXE                  bool
	PXEKernel, PXEInitrd string
	// Storage gives every node an iSCSI LUN (root mode only): one tgtd per node in
	// the lab's namespace, xedge.storage from the PXE server (or on the kernel
	// command line when booted directly).
	Storage bool
	// VIP (e.g. 10.77.0.100/24) is a VIP pool on the nodes' segment NIC (eth0), and
	// DNS runs xmppd's embedded DNS server on port 53 of every node (SRV records for
	// the domain, the VIP's A record). Root mode only: both reach the nodes as
	// settings in the xmppd.yaml the boot server hands out (xmppd.extra.yaml).
	VIP string
	DNS bool
	// IPXEWait leaves iPXE's 2 s "Press Ctrl-B" prompt to time out on every PXE
	// box (by default the lab presses a key through it: pressThroughIPXEBanner).
	IPXEWait  bool
	Log       io.Writer
	WaitReady time.Duration
}

const stateFile = "lab.json"

// LoadState reads the lab state; a missing lab is an error naming `xedge lab up`.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab in %s: start one with `xedge lab up`", dir)
		}
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	return &s, nil
}

func (s *State) save(dir string) error {
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, stateFile), b, 0o644)
}

// Node finds a node by name ("node1") or number ("1").
func (s *State) Node(name string) (*NodeState, error) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name || s.Nodes[i].Name == "node"+name {
			return &s.Nodes[i], nil
		}
	}
	return nil, fmt.Errorf("no lab node %q", name)
}

// Alive reports whether pid is a running qemu of this lab (not a recycled PID).
func Alive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return strings.Contains(string(b), dir)
}

// Up starts the segment server and the nodes, and waits until each is ready (or in
// maintenance). It returns the state and, per node, the console's status line.
func Up(ctx context.Context, o UpOptions) (*State, []string, error) {
	if len(o.Self) < 2 {
		return nil, nil, errors.New("lab up: Self must name the xedge binary and its `lab ... segment` arguments")
	}
	if o.Nodes < 1 || o.Nodes > 32 {
		return nil, nil, fmt.Errorf("lab up: -n %d: want 1..32", o.Nodes)
	}
	if old, err := LoadState(o.Dir); err == nil {
		for _, n := range old.Nodes {
			if Alive(n.PID, n.Dir) {
				return nil, nil, fmt.Errorf("a lab is already up in %s (%s running): `xedge lab down` first", o.Dir, n.Name)
			}
		}
		_ = Down(o.Dir) // a dead lab's leftovers: its boot server, namespace, state
	}
	for _, f := range []string{o.Kernel, o.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return nil, nil, fmt.Errorf("%s: %w (build the image with `make image`)", f, err)
		}
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	if o.MaxBoot <= 0 {
		o.MaxBoot = 2
	}
	if o.WaitReady == 0 {
		o.WaitReady = 3 * time.Minute
		if o.PXE {
			o.WaitReady = 6 * time.Minute // bzImage and initramfs unpacked under TCG, several boxes at once
		}
	}
	st := &State{Mode: "mcast", Domain: o.Domain, Boot: "direct", Kernel: o.Kernel, Initrd: o.Initrd, Params: o.Params, Storage: o.Storage}
	if o.PXE {
		st.Boot = "pxe"
		if o.ClusterKey == "" {
			o.ClusterKey = randomKey()
		}
	}
	if (o.PXE || o.Storage) && o.Mode != "netns" {
		return nil, nil, errors.New("lab up: --pxe and --storage need root mode (--mode netns, run as root): the PXE server, HTTP and tgtd live in the lab's network namespace")
	}
	if o.VIP != "" || o.DNS {
		if o.Mode != "netns" {
			return nil, nil, errors.New("lab up: a VIP and DNS need root mode (--mode netns): they reach the nodes through the boot server's xmppd.yaml")
		}
		st.VIP, st.DNS = o.VIP, o.DNS
	}
	if err := os.WriteFile(filepath.Join(dir, servicesFile), []byte(ServicesYAML(o.VIP, o.DNS)), 0o644); err != nil {
		return nil, nil, err
	}
	if o.ClusterKey != "" {
		if err := os.WriteFile(filepath.Join(dir, "cluster.key"), []byte(o.ClusterKey), 0o600); err != nil {
			return nil, nil, err
		}
		st.Key = true
	}
	var ns *NetNS
	var cmd *exec.Cmd
	switch o.Mode {
	case "", "mcast":
		st.Group = fmt.Sprintf("230.77.%d.%d:%d", rand.IntN(250)+1, rand.IntN(250)+1, 20000+rand.IntN(30000))
		cmd = exec.Command(o.Self[0], append(append([]string{}, o.Self[1:]...), "--group", st.Group, "--domain", o.Domain)...)
	case "netns":
		st.Mode = "netns"
		st.NetNS = fmt.Sprintf("xedge-lab-%d", rand.IntN(1e6))
		if ns, err = CreateNetNS(st.NetNS); err != nil {
			return nil, nil, err
		}
		// The boot server runs inside the namespace: its DHCP, HTTP and RA sockets
		// and the tgtd daemons it starts all live there.
		args := append([]string{"netns", "exec", st.NetNS, o.Self[0]}, o.Self[1:]...)
		args = append(args, "--netns", st.NetNS, "--boot", "--domain", o.Domain, "--nodes", fmt.Sprint(o.Nodes),
			"--cmdline", strings.TrimSpace(DefaultCmdline+" "+o.Params))
		if o.PXE {
			args = append(args, "--kernel", o.PXEKernel, "--initrd", o.PXEInitrd, "--key-file", filepath.Join(dir, "cluster.key"))
		}
		if o.Storage {
			args = append(args, "--storage")
		}
		cmd = exec.Command("ip", args...)
	default:
		return nil, nil, fmt.Errorf("lab up: mode %q: want mcast or netns", o.Mode)
	}
	// The segment's server, detached so it outlives this command.
	seglog, err := os.Create(filepath.Join(dir, "segment.log"))
	if err != nil {
		if ns != nil {
			ns.Delete()
		}
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = seglog, seglog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		seglog.Close()
		if ns != nil {
			ns.Delete()
		}
		return nil, nil, fmt.Errorf("segment server: %w", err)
	}
	seglog.Close()
	st.SegmentPID = cmd.Process.Pid
	go cmd.Wait() // reap it if this process lives on
	if err := st.save(dir); err != nil {
		return nil, nil, err
	}
	if st.Mode == "netns" {
		if err := waitBootServer(ctx, dir, cmd); err != nil {
			return st, nil, err
		}
	}
	lines := make([]string, o.Nodes)
	readyAt := make([]time.Time, o.Nodes)
	readyCPU := make([]float64, o.Nodes)
	sem := make(chan struct{}, o.MaxBoot)
	results := make(chan error, o.Nodes)
	for i := 1; i <= o.Nodes; i++ {
		sem <- struct{}{}
		params := o.Params
		if o.ClusterKey != "" && !o.PXE {
			params += " xedge.key=" + o.ClusterKey
			if i > 1 {
				params += " xedge.seeds=10.77.0.11"
			}
		}
		if o.Storage && !o.PXE {
			params += " xedge.storage=" + StorageURL(i)
		}
		nst, err := st.startNode(ctx, dir, i, ns, o.PXE, strings.TrimSpace(params))
		if err != nil {
			<-sem
			return st, nil, err
		}
		if err := st.save(dir); err != nil {
			return st, nil, err
		}
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s: qemu pid %d, c2s 127.0.0.1:%d\n", nst.Name, nst.PID, nst.Port)
		}
		if o.PXE && !o.IPXEWait {
			go pressThroughIPXEBanner(ctx, dir, nst.Dir, nst.MAC, ipxeKeyLimit, o.Log)
		}
		go func(i int, nst NodeState) {
			defer func() { <-sem }()
			line, err := WaitConsole(ctx, filepath.Join(nst.Dir, "console.log"), readyOrMaint, o.WaitReady)
			if err == nil {
				readyAt[i-1] = time.Now()
				readyCPU[i-1] = (&VM{PID: nst.PID}).CPUSeconds()
			}
			lines[i-1] = fmt.Sprintf("%s: %s", nst.Name, line)
			if err != nil {
				err = fmt.Errorf("%s: %w", nst.Name, err)
			}
			results <- err
		}(i, nst)
	}
	var errs []error
	for i := 0; i < o.Nodes; i++ {
		if err := <-results; err != nil {
			errs = append(errs, err)
		}
	}
	for i := range st.Nodes {
		if i < len(readyAt) {
			st.Nodes[i].Ready, st.Nodes[i].ReadyCPU = readyAt[i], readyCPU[i]
		}
	}
	if err := st.save(dir); err != nil {
		errs = append(errs, err)
	}
	return st, lines, errors.Join(errs...)
}

// ServicesYAML is the xmppd settings for a VIP pool on the segment NIC and the
// embedded DNS server on every node.
func ServicesYAML(vip string, dns bool) string {
	var b strings.Builder
	if vip != "" {
		fmt.Fprintf(&b, "vip: %s\nvip-interface: eth0\n", vip)
	}
	if dns {
		b.WriteString("dns-listen: 0.0.0.0:53\n")
	}
	return b.String()
}

// servicesFile holds the lab's own settings (ServicesYAML), rewritten by every
// `up`; the boot server appends it to the xmppd.yaml it serves, after a
// scenario's xmppd.extra.yaml, whose keys win (over the lab's timing too).
const servicesFile = "xmppd.services.yaml"

// MergeYAML appends to base the lines of add whose top-level key base does not
// set yet (xmppd rejects a key given twice).
func MergeYAML(base, add string) string {
	if add == "" {
		return base
	}
	if base != "" && !strings.HasSuffix(base, "\n") {
		base += "\n"
	}
	for _, line := range strings.SplitAfter(add, "\n") {
		key, _, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") || regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(key)+`:`).MatchString(base) {
			continue
		}
		base += line
	}
	return base
}

// ReadyOrMaint matches a node's ready, maintenance or quarantine console line.
var ReadyOrMaint = readyOrMaint

var readyOrMaint = regexp.MustCompile(`xedge: (ready \S+ \S+|maintenance[^\r\n]*|quarantine[^\r\n]*)\r*\n`)

// startNode boots lab node i: PXE (no kernel: the segment NIC boots from the
// network) or direct (the PVH kernel with params on its command line).
func (st *State) startNode(ctx context.Context, dir string, i int, ns *NetNS, pxeBoot bool, params string) (NodeState, error) {
	port, err := FreePort()
	if err != nil {
		return NodeState{}, err
	}
	nst := NodeState{Name: fmt.Sprintf("node%d", i), Dir: filepath.Join(dir, fmt.Sprintf("node%d", i)),
		MAC: fmt.Sprintf("52:54:00:77:01:%02x", i), Port: port}
	segNIC := NIC{Kind: "mcast", Mcast: st.Group, MAC: nst.MAC, Boot: pxeBoot}
	if ns != nil {
		tap, err := ns.OpenTap(fmt.Sprintf("tap%d", i))
		if err != nil {
			return nst, err
		}
		segNIC = NIC{Kind: "tapfd", TapFile: tap, MAC: nst.MAC, Boot: pxeBoot}
	}
	cfg := Config{Name: nst.Name, Kernel: st.Kernel, Initrd: st.Initrd, Params: params, Dir: nst.Dir, Daemonize: true,
		NICs: []NIC{segNIC, {Kind: "user", Forwards: map[int]int{port: 5222}}}}
	if pxeBoot {
		cfg.Kernel, cfg.Initrd, cfg.Params = "", "", ""
	}
	nst.Started = time.Now()
	vm, err := Start(ctx, cfg)
	if segNIC.TapFile != nil {
		segNIC.TapFile.Close() // qemu holds its own copy
	}
	if err != nil {
		return nst, fmt.Errorf("%s: %w", nst.Name, err)
	}
	nst.PID = vm.PID
	st.Nodes = append(st.Nodes, nst)
	return nst, nil
}

// AddOptions configure AddNode.
type AddOptions struct {
	// Direct boots the new node's kernel directly even in a PXE lab (a box that
	// brings its own configuration, e.g. a wrong cluster key).
	Direct bool
	// Params are extra kernel parameters (direct boot only).
	Params string
	// IPXEWait: as UpOptions.IPXEWait.
	IPXEWait bool
}

// AddNode boots one more node on a running lab's segment and returns it (it does
// not wait for it to be ready: WaitConsole on its console.log). A PXE box gets a key
// pressed through iPXE's prompt while ctx lasts.
func AddNode(ctx context.Context, dir string, o AddOptions) (*NodeState, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var ns *NetNS
	if st.NetNS != "" {
		ns = &NetNS{Name: st.NetNS}
	}
	i := len(st.Nodes) + 1
	params := strings.TrimSpace(st.Params + " " + o.Params)
	pxe := st.Boot == "pxe" && !o.Direct
	nst, err := st.startNode(ctx, abs, i, ns, pxe, params)
	if err != nil {
		return nil, err
	}
	if pxe && !o.IPXEWait {
		go pressThroughIPXEBanner(ctx, abs, nst.Dir, nst.MAC, ipxeKeyLimit, nil)
	}
	if err := st.save(abs); err != nil {
		return nil, err
	}
	return &nst, nil
}

// waitBootServer waits until the boot server answers on its control socket (its
// DHCP, HTTP and targets are up then), or reports its log when it died.
func waitBootServer(ctx context.Context, dir string, cmd *exec.Cmd) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := Control(dir, "boxes"); err == nil {
			return nil
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if !startingAlive(b, err, dir) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "segment.log"))
	return fmt.Errorf("lab boot server did not come up; its log:\n%s", b)
}

// randomKey is a fresh cluster key (26 base32 characters, 130 bits).
func randomKey() string { return crand.Text() }

// WaitConsole polls a console log until re matches, returning the match.
func WaitConsole(ctx context.Context, path string, re *regexp.Regexp, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if b, err := os.ReadFile(path); err == nil {
			if m := re.FindStringSubmatch(string(b)); m != nil {
				if len(m) > 1 {
					return m[1], nil
				}
				return m[0], nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "not ready", fmt.Errorf("no %q in %s after %s", re, path, d)
}

// Kill stops one node's qemu at once (a crash: no clean shutdown).
func Kill(dir, name string) error { return signalNode(dir, name, syscall.SIGKILL) }

// Freeze stops one node's qemu with SIGSTOP: the box hangs, its sockets stay open.
func Freeze(dir, name string) error { return signalNode(dir, name, syscall.SIGSTOP) }

// Thaw resumes a frozen node.
func Thaw(dir, name string) error { return signalNode(dir, name, syscall.SIGCONT) }

func signalNode(dir, name string, sig syscall.Signal) error {
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	n, err := st.Node(name)
	if err != nil {
		return err
	}
	if !Alive(n.PID, n.Dir) {
		return fmt.Errorf("%s is not running", n.Name)
	}
	return syscall.Kill(n.PID, sig)
}

// Down stops every node — ACPI power button first, so init stops xmppd cleanly,
// SIGKILL after 15 s — then the segment server, and removes the state file (the
// consoles' logs stay for inspection).
func Down(dir string) error {
	st, err := LoadState(dir)
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if Alive(n.PID, n.Dir) {
			_ = syscall.Kill(n.PID, syscall.SIGCONT) // a frozen node cannot power down
			_ = Monitor(n.Dir, "system_powerdown")
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range st.Nodes {
		for Alive(n.PID, n.Dir) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if Alive(n.PID, n.Dir) {
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
	}
	if st.SegmentPID > 0 && segmentAlive(st.SegmentPID, st.segmentTag()) {
		_ = syscall.Kill(st.SegmentPID, syscall.SIGTERM)
	}
	var errs []error
	if st.NetNS != "" {
		// Taps vanish with qemu; the namespace goes last.
		time.Sleep(300 * time.Millisecond)
		if err := (&NetNS{Name: st.NetNS}).Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// segmentTag is what identifies this lab's segment server on its command line.
func (s *State) segmentTag() string {
	if s.NetNS != "" {
		return s.NetNS
	}
	return s.Group
}

// startingAlive is segmentAlive for the boot server this process has just
// started, from its /proc cmdline (b, err): its own child, whose PID is not
// reused before it is reaped. While `ip netns exec` replaces itself with the
// server, the command line reads empty for a moment: alive, not gone (a CI run
// of the VM tier took that moment for a dead server with an empty log). An
// exited child reads empty too until it is reaped, then not at all.
func startingAlive(b []byte, err error, tag string) bool {
	return err == nil && (len(b) == 0 || strings.Contains(string(b), tag))
}

func segmentAlive(pid int, group string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), group)
}

// Status describes each node: running or not, its last ready line, its c2s port.
func Status(dir string) ([]string, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	where := "multicast group " + st.Group
	if st.NetNS != "" {
		where = "bridge br0 in netns " + st.NetNS
	}
	out = append(out, fmt.Sprintf("segment: %s, DHCP server pid %d running=%v, domain %s", where, st.SegmentPID, segmentAlive(st.SegmentPID, st.segmentTag()), st.Domain))
	for _, n := range st.Nodes {
		state := "stopped"
		if Alive(n.PID, n.Dir) {
			state = "running"
		}
		last := "-"
		if b, err := os.ReadFile(filepath.Join(n.Dir, "console.log")); err == nil {
			if m := readyOrMaint.FindAllStringSubmatch(string(b), -1); len(m) > 0 {
				last = m[len(m)-1][1]
			}
		}
		out = append(out, fmt.Sprintf("%-7s %-8s pid %-7d mac %s c2s 127.0.0.1:%d  %s", n.Name, state, n.PID, n.MAC, n.Port, last))
	}
	return out, nil
}

// LabAddr gives lab node N (MAC 52:54:00:77:01:N) the address 10.77.0.(10+N).
func LabAddr(mac net.HardwareAddr) (netip.Addr, bool) {
	if len(mac) != 6 || mac[0] != 0x52 || mac[1] != 0x54 || mac[2] != 0 || mac[3] != 0x77 || mac[4] != 1 || mac[5] == 0 || mac[5] > 80 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte{10, 77, 0, 10 + mac[5]}), true
}

// ServeSegment runs the segment's DHCP server until ctx ends (the hidden
// `xedge lab segment` command).
func ServeSegment(ctx context.Context, group, domain string) error {
	g, err := netip.ParseAddrPort(group)
	if err != nil {
		return fmt.Errorf("group %q: %w", group, err)
	}
	xedge := ""
	if domain != "" {
		xedge = "xedge.domain=" + domain
	}
	s := &Segment{Group: g, ServerIP: netip.MustParseAddr("10.77.0.1"), Prefix: netip.MustParsePrefix("10.77.0.0/24"),
		First: netip.MustParseAddr("10.77.0.100"), Domain: domain, Xedge: xedge, Lease: 10 * time.Minute, Fixed: LabAddr}
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Stop(sctx)
}

// Run types one command on a node's console and returns what it printed up to the
// next prompt.
func Run(ctx context.Context, sock, line string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := DialConsole(ctx, sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Send(line); err != nil {
		return "", err
	}
	m, err := c.Expect(ctx, regexp.MustCompile(`(?s)`+regexp.QuoteMeta(line)+`\r?\n(.*?)xedge> `))
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(m[1], "\r", ""), nil
}

// Attach copies a console socket to and from the terminal until the peer closes or
// the escape byte (Ctrl-]) is typed.
func Attach(sock string, in io.Reader, out io.Writer) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("console %s: %w (is the node running? only one console client at a time)", sock, err)
	}
	defer c.Close()
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(out, c)
		done <- err
	}()
	go func() {
		b := make([]byte, 256)
		for {
			n, err := in.Read(b)
			if err != nil {
				done <- err
				return
			}
			if i := strings.IndexByte(string(b[:n]), 0x1d); i >= 0 {
				c.Write(b[:i])
				done <- nil
				return
			}
			if _, err := c.Write(b[:n]); err != nil {
				done <- err
				return
			}
		}
	}()
	_, _ = c.Write([]byte("\r"))
	return <-done
}
