package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"xedge/init/boot"
	"xedge/init/config"
	"xedge/init/console"
	"xedge/init/modules"
	"xedge/init/supervise"
	"xedge/netcfg"
	"xedge/xmppd/admin"
)

// Paths inside the image.
const (
	xmppdPath     = "/bin/xmppd"
	imageDefaults = "/etc/xedge/defaults"
	xmppdConfig   = "/etc/xedge/xmppd.yaml"
)

// node is PID 1's state.
type node struct {
	start   time.Time
	log     *slog.Logger
	sink    *logSink
	con     *console.Console
	reaper  *boot.Reaper
	power   chan boot.Action
	cmdline config.Layer
	image   config.Layer

	mu       sync.Mutex
	cfg      config.Config
	dhcp     map[string]*netcfg.DHCP // links with a lease (for the console)
	net      *netcfg.Network
	primary  netcfg.Lease
	hostname string
	state    string // booting, maintenance, quarantine, starting, serving, down
	// quarantine are the reasons this box is kept out of the cluster.
	quarantine []string
	ready      string // last ready line
	sup        *supervise.Supervisor
	// leaseLate: the network phase ended without a lease (DHCP goes on in the
	// background); the first lease then runs the boot's remaining phases, once.
	leaseLate bool
	lateOnce  sync.Once
	bootDone  chan struct{} // closed once the boot phases have run
}

func pid1() {
	n := &node{start: time.Now(), power: make(chan boot.Action, 1), state: "booting", dhcp: map[string]*netcfg.DHCP{}, bootDone: make(chan struct{})}
	n.sink = newLogSink()
	n.log = slog.New(slog.NewTextHandler(n.sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(n.log)
	n.con = console.New(os.Stdout)
	defer func() {
		if r := recover(); r != nil {
			n.handle(fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	n.handle(n.run())
}

// handle is where PID 1 ends: a power action stops xmppd cleanly first; a fatal error
// is shown on the console, then the box syncs and reboots. It never returns.
func (n *node) handle(err error) {
	action := boot.Reboot
	if err != nil {
		n.log.Error("fatal", "err", err)
		n.con.Say("fatal: %v; rebooting in 10 s", err)
		time.Sleep(10 * time.Second)
	} else {
		action = <-n.power
	}
	n.shutdown(action)
	// Only reached if reboot(2) failed. PID 1 must not exit (the kernel would panic).
	for {
		n.con.Say("%s failed; halted", action)
		time.Sleep(time.Hour)
	}
}

func (n *node) shutdown(action boot.Action) {
	n.con.Say("%s: stopping xmppd", action)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n.mu.Lock()
	sup, nw := n.sup, n.net
	n.mu.Unlock()
	if sup != nil {
		if err := sup.Stop(ctx); err != nil {
			n.con.Say("xmppd did not stop: %v", err)
		} else {
			n.con.Say("xmppd stopped")
		}
	}
	if nw != nil {
		_ = nw.Stop(ctx)
	}
	n.con.Say("%s now", action)
	if err := boot.Final(action); err != nil {
		n.log.Error("reboot syscall", "err", err)
	}
}

func (n *node) run() error {
	ctx := context.Background()
	phases := boot.PhaseList{}.
		Append("mounts", func(context.Context) error { return boot.MountAll() }).
		AppendOptional("console", n.setupConsole).
		Append("reaper", n.startReaper).
		AppendOptional("modules", n.loadModules).
		AppendOptional("cmdline", n.readCmdline).
		AppendOptional("network", n.network).
		AppendOptional("hostname", n.setHostname).
		AppendOptional("config", n.assembleConfig).
		AppendOptional("xmppd", n.startXmppd).
		AppendOptional("pxe", n.startPXE)
	err := phases.Run(ctx, func(r boot.Result) {
		if r.Err != nil {
			n.log.Error("boot phase failed", "phase", r.Name, "took", r.Duration, "err", r.Err)
			n.con.Say("boot phase %s: %v", r.Name, r.Err)
			return
		}
		n.log.Info("boot phase done", "phase", r.Name, "took", r.Duration)
	})
	close(n.bootDone)
	if err != nil {
		return err
	}
	n.log.Info("boot done", "took", time.Since(n.start))
	go n.shell(ctx)
	go n.watchPowerButton()
	return nil
}

// setupConsole makes ttyS0 (or /dev/console) stdin/stdout/stderr of PID 1.
func (n *node) setupConsole(context.Context) error {
	var tty *os.File
	var err error
	for _, p := range []string{"/dev/ttyS0", "/dev/console"} {
		if tty, err = os.OpenFile(p, os.O_RDWR|unix.O_NOCTTY, 0); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("open console: %w", err)
	}
	for _, fd := range []int{0, 1, 2} {
		if err := unix.Dup2(int(tty.Fd()), fd); err != nil {
			return fmt.Errorf("dup console: %w", err)
		}
	}
	// A serial line reports 0x0; the line editor needs a width.
	if ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ); err == nil && ws.Col == 0 {
		_ = unix.IoctlSetWinsize(0, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 200})
	}
	_ = os.Setenv("TERM", "vt100")
	_ = os.Setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
	n.con = console.New(os.Stdout)
	return nil
}

func (n *node) startReaper(context.Context) error {
	n.reaper = boot.NewReaper()
	n.reaper.Start()
	sig := make(chan os.Signal, 4)
	// The kernel sends SIGINT for ctrl-alt-del (when disabled), SIGTERM/SIGPWR from
	// outside tools: reboot, and poweroff.
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM, unix.SIGPWR)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	go func() {
		for s := range sig {
			a := boot.Reboot
			if s == unix.SIGPWR || s == unix.SIGTERM {
				a = boot.PowerOff
			}
			n.requestPower(a)
		}
	}()
	return nil
}

func (n *node) requestPower(a boot.Action) {
	select {
	case n.power <- a:
	default:
	}
}

func (n *node) loadModules(context.Context) error {
	as, err := modules.LoadAliases()
	if err != nil {
		return err
	}
	// The ACPI button driver is loaded later, off the boot path (watchPowerButton).
	_, err = modules.LoadForHardware(n.log, as, "button")
	return err
}

func (n *node) readCmdline(context.Context) error {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read cmdline: %w", err)
	}
	n.cmdline = config.ParseParams("cmdline", string(b))
	if d, err := os.ReadFile(imageDefaults); err == nil {
		n.image = config.ParseParams("image", string(d))
	} else {
		n.image = config.Layer{Source: "image"}
	}
	n.setCfg(config.Merge(config.Builtin(), n.image, n.cmdline))
	if n.getCfg().Debug {
		if err := n.sink.mirrorTo("/dev/ttyS1"); err == nil {
			n.log.Info("log mirrored to ttyS1 (xedge.debug=1)")
		}
	}
	return nil
}

func (n *node) setCfg(c config.Config) {
	n.mu.Lock()
	n.cfg = c
	n.mu.Unlock()
}

func (n *node) getCfg() config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// network runs DHCP on every ethernet link at once through netcfg.Network: the
// phase ends once every link has a lease, or at the latest a short grace after the
// first lease (the link with the default route, else the lowest-named one, becomes primary), and every link keeps
// its lease renewed (T1 renew, T2 rebind, expiry handled), including a link whose
// lease arrives after this phase ended.
func (n *node) network(ctx context.Context) error {
	if err := netcfg.LoopbackUp(); err != nil {
		n.log.Warn("loopback", "err", err)
	}
	timeout := n.getCfg().DHCPTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// The grace after the first lease waits for the other links' leases (the one
	// with a default route should be primary); once every link has one there is
	// nothing left to wait for, so it ends then (under TCG it was a whole second of
	// every boot).
	links, err := netcfg.EthernetLinks()
	if err != nil {
		links = nil // Start lists them again and reports the error
	}
	gctx, endGrace := context.WithCancel(ctx)
	defer endGrace()
	leased := map[string]bool{}
	var nw *netcfg.Network
	nw = netcfg.NewNetwork(netcfg.NetworkConfig{
		Links:   links,
		Timeout: timeout, Grace: time.Second, ResolvConf: "/etc/resolv.conf", Log: n.log,
		OnLease: func(l netcfg.Lease) {
			n.mu.Lock()
			if d := nw.Client(l.Interface); d != nil {
				n.dhcp[l.Interface] = d
			}
			if n.primary.Interface == l.Interface {
				n.primary = l
			}
			leased[l.Interface] = true
			all := len(links) > 0 && len(leased) >= len(links)
			late := n.leaseLate
			n.mu.Unlock()
			if all {
				endGrace()
			}
			if late {
				n.lateLease(l)
			}
		},
		OnExpire: func(l netcfg.Lease) { n.con.Say("DHCP lease of %s on %s expired; asking again", l.Addr, l.Interface) },
	})
	n.mu.Lock()
	n.net = nw
	n.mu.Unlock()
	primary, err := nw.Start(gctx)
	if err != nil {
		n.mu.Lock()
		n.leaseLate = true
		n.mu.Unlock()
		// A lease that came between Start giving up and the flag.
		if ls := nw.Leases(); len(ls) > 0 {
			n.lateLease(ls[0])
		}
		return err
	}
	n.mu.Lock()
	n.primary = primary
	n.mu.Unlock()
	for _, l := range nw.Leases() {
		n.log.Info("address", "if", l.Interface, "addr", l.Addr)
	}
	return nil
}

// lateLease finishes the boot on the first lease that came after the network
// phase gave up: once the boot phases have run, a node left in maintenance
// because it had no network gets its hostname, configuration, xmppd and PXE
// server as at boot. Without it a box whose DHCP server answered late (a busy
// segment, a slow boot server) stayed in maintenance until rebooted.
func (n *node) lateLease(l netcfg.Lease) {
	n.lateOnce.Do(func() {
		go func() {
			<-n.bootDone
			n.mu.Lock()
			if !n.primary.Addr.IsValid() {
				n.primary = l
			}
			n.mu.Unlock()
			if c := n.getCfg(); !c.Maintenance() || !slices.Contains(c.Problems, noNetwork) {
				return
			}
			n.con.Say("network: %s on %s after the boot gave up waiting; finishing the boot", l.Addr, l.Interface)
			ctx := context.Background()
			for _, p := range []struct {
				name string
				run  func(context.Context) error
			}{{"hostname", n.setHostname}, {"config", n.assembleConfig}, {"xmppd", n.startXmppd}, {"pxe", n.startPXE}} {
				if err := p.run(ctx); err != nil {
					n.log.Error("boot phase failed", "phase", p.name, "late", true, "err", err)
					n.con.Say("boot phase %s: %v", p.name, err)
					continue
				}
				n.log.Info("boot phase done", "phase", p.name, "late", true)
			}
		}()
	})
}

// setHostname: xedge.hostname > DHCP option 12 > a name from the MAC now, then the
// reverse DNS name of the primary address when it answers (in the background).
func (n *node) setHostname(context.Context) error {
	n.mu.Lock()
	lease, cfg := n.primary, n.cfg
	n.mu.Unlock()
	name, source := cfg.Hostname, "cmdline"
	if name == "" && lease.Hostname != "" {
		name, source = lease.Hostname, "dhcp"
	}
	if name == "" {
		name, source = fallbackHostname(lease.Interface), "mac"
		if lease.Addr.IsValid() && len(lease.DNS) > 0 {
			go n.reverseHostname(lease)
		}
	}
	n.log.Info("hostname", "name", name, "from", source)
	n.mu.Lock()
	n.hostname = name
	n.mu.Unlock()
	return netcfg.SetHostname(name)
}

func (n *node) reverseHostname(lease netcfg.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	name, err := netcfg.ReverseName(ctx, lease.Addr.Addr(), lease.DNS)
	if err != nil {
		n.log.Info("no reverse DNS name", "err", err)
		return
	}
	short, _, _ := strings.Cut(name, ".")
	if err := netcfg.SetHostname(short); err == nil {
		n.mu.Lock()
		n.hostname = short
		n.mu.Unlock()
		n.log.Info("hostname", "name", short, "from", "reverse-dns")
	}
}

func fallbackHostname(ifname string) string {
	if ifname != "" {
		if i, err := net.InterfaceByName(ifname); err == nil && len(i.HardwareAddr) == 6 {
			h := i.HardwareAddr
			return fmt.Sprintf("xedge-%02x%02x%02x", h[3], h[4], h[5])
		}
	}
	return "xedge"
}

// assembleConfig merges defaults, image defaults, DHCP and the command line, fetches
// xedge.config, and leaves the node in maintenance when something is missing.
func (n *node) assembleConfig(ctx context.Context) error {
	n.mu.Lock()
	lease := n.primary
	n.mu.Unlock()
	layers := []config.Layer{config.Builtin(), n.image, config.FromDHCP(lease.Xedge, lease.Domain), n.cmdline}
	var fetchErr error
	if boot := config.Merge(layers...).Boot; boot != "" && lease.Addr.IsValid() {
		// Booted by an xedge boot server: the box's parameters (cluster key, seeds,
		// domain, storage) come from it; the kernel command line still wins.
		var server config.Layer
		server, fetchErr = fetchParams(ctx, boot, lease.Interface)
		if fetchErr != nil {
			n.log.Error("boot server parameters", "url", boot, "err", fetchErr)
			server.Warnings = append(server.Warnings, fmt.Sprintf("boot server %s: %v", boot, fetchErr))
		}
		layers = []config.Layer{config.Builtin(), n.image, config.FromDHCP(lease.Xedge, lease.Domain), server, n.cmdline}
	}
	c := config.Merge(layers...)
	if fetchErr != nil && c.ClusterKey == "" {
		c.Quarantine = []string{fmt.Sprintf("no cluster key: this box's parameters could not be fetched from its boot server: %v", fetchErr)}
	}
	if !lease.Addr.IsValid() {
		c.Problems = append(c.Problems, noNetwork)
	}
	if _, err := os.Stat(xmppdPath); err != nil {
		c.Problems = append(c.Problems, "xmppd is missing from the image ("+xmppdPath+")")
	}
	if c.ConfigURL != "" && len(c.Problems) == 0 {
		if err := fetch(ctx, c.ConfigURL, xmppdConfig); err != nil {
			c.Problems = append(c.Problems, fmt.Sprintf("xedge.config: %v", err))
		}
	}
	for _, w := range c.Warnings {
		n.log.Warn("config", "warning", w)
	}
	n.setCfg(c)
	if c.Quarantined() {
		n.enterQuarantine(c.Quarantine...)
	} else if c.Maintenance() {
		n.setState("maintenance")
		n.con.Say("maintenance: xmppd not started:\n- %s\ntype `node` on this console for details", strings.Join(c.Problems, "\n- "))
	}
	return nil
}

// noNetwork is the configuration problem of a node without a lease.
const noNetwork = "no network: no DHCP lease on any interface"

func fetch(ctx context.Context, url, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	return os.WriteFile(path, b, 0o600)
}

func (n *node) setState(s string) {
	n.mu.Lock()
	n.state = s
	n.mu.Unlock()
}

func (n *node) startXmppd(ctx context.Context) error {
	c := n.getCfg()
	if c.Maintenance() {
		return nil
	}
	n.mu.Lock()
	rt := config.Runtime{NodeName: n.hostname, Addr: n.primary.Addr.Addr()}
	n.mu.Unlock()
	if c.ConfigURL != "" {
		rt.ConfigFile = xmppdConfig
	}
	if err := os.MkdirAll(config.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if c.ClusterKey != "" {
		if err := os.WriteFile(config.ClusterKeyFile, []byte(c.ClusterKey), 0o600); err != nil {
			return fmt.Errorf("cluster key file: %w", err)
		}
	}
	cmd := &supervise.Command{
		Path:   xmppdPath,
		Args:   c.XmppdArgs(rt),
		Env:    []string{"PATH=/bin:/sbin:/usr/sbin:/usr/bin", "HOME=" + config.DataDir},
		Dir:    config.DataDir,
		Output: &prefixWriter{prefix: "xmppd: ", sink: n.sink, onLine: n.watchXmppdLine},
		Reaper: n.reaper,
	}
	p := supervise.DefaultPolicy()
	p.MaxRestarts, p.Window = c.MaxRestarts, c.RestartWindow
	var sup *supervise.Supervisor
	sup = supervise.New("xmppd", cmd, p, supervise.WithLogger(n.log), supervise.WithNotify(func(e supervise.Event) {
		n.onEvent(sup, e)
	}))
	n.mu.Lock()
	n.sup = sup
	n.state = "starting"
	n.mu.Unlock()
	return sup.Start(ctx)
}

func (n *node) onEvent(sup *supervise.Supervisor, e supervise.Event) {
	n.mu.Lock()
	quarantined := n.state == "quarantine"
	n.mu.Unlock()
	if quarantined {
		return // xmppd is being stopped for good; the console already says why
	}
	switch e.Kind {
	case supervise.EventStarted:
		n.setState("starting")
		go n.watchReady(sup, e.PID)
	case supervise.EventExited:
		st := sup.Status()
		n.setState("restarting")
		n.con.Say("xmppd exited (%v); restarting in %s (restart %d of %d within %s)", e.Err, e.Backoff, st.Restarts, n.getCfg().MaxRestarts, n.getCfg().RestartWindow)
	case supervise.EventGaveUp:
		n.setState("down")
		n.con.Say("xmppd down: %s; type `revive` on this console to start it again", e.Reason)
	}
}

// watchReady polls until xmppd with this PID accepts c2s connections on port 5222 and
// answers `status` on its admin socket (xmppd starts the admin socket last), then
// prints the ready line with the version xmppd reports.
func (n *node) watchReady(sup *supervise.Supervisor, pid int) {
	deadline := time.Now().Add(2 * time.Minute)
	ver := ""
	for ver == "" {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			// Say so once, and keep watching: a node joining a busy cluster may
			// take longer, and its ready line must still come.
			n.con.Say("xmppd (pid %d) is not serving yet (c2s port 5222 and admin socket) after 2 minutes; still waiting", pid)
			deadline = time.Time{}
		}
		if st := sup.Status(); st.PID != pid {
			return
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:5222", 300*time.Millisecond); err == nil {
			c.Close()
			ver = xmppdVersion()
		}
		if ver == "" {
			time.Sleep(50 * time.Millisecond)
		}
	}
	n.mu.Lock()
	if n.state == "quarantine" {
		n.mu.Unlock()
		return
	}
	ip := "-"
	if n.primary.Addr.IsValid() {
		ip = n.primary.Addr.Addr().String()
	}
	n.state = "serving"
	n.ready = fmt.Sprintf("ready %s %s", ip, ver)
	line := n.ready
	n.mu.Unlock()
	n.log.Info("xmppd ready", "pid", pid, "since_boot", time.Since(n.start))
	n.con.Say("%s", line)
}

// xmppdVersion asks xmppd's admin socket for its status; "" until it answers. An
// xmppd that answers without a version is shown with the image's build version.
func xmppdVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := admin.Call(ctx, config.AdminSocket, admin.Request{Cmd: "status"})
	if err != nil || !resp.OK {
		return ""
	}
	var st struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(resp.Result, &st) == nil && st.Version != "" {
		return st.Version
	}
	return version
}

// ipOf is a helper for the node command.
func ipOf(p netip.Prefix) string {
	if !p.IsValid() {
		return "-"
	}
	return p.String()
}

// kill is the debug hook: SIGKILL to xmppd.
func (n *node) killXmppd() error {
	n.mu.Lock()
	sup := n.sup
	n.mu.Unlock()
	if sup == nil {
		return errors.New("xmppd is not supervised (maintenance?)")
	}
	return sup.Signal(syscall.SIGKILL)
}
