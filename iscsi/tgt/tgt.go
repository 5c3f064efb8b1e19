// Package tgt runs Debian's tgtd (the Linux SCSI target framework daemon) for
// xedge's iSCSI tests and benchmarks: one daemon per instance on its own portal
// and control port, optionally inside a network namespace, with file-backed
// LUNs and CHAP accounts configured through tgtadm.
//
// It is host tooling for tests and benchmarks, never imported by runtime code.
package tgt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"xedge/internal/freeport"
)

// Available reports why tgtd cannot run here, or nil.
func Available() error {
	for _, b := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("tgt: %s not found (Debian package tgt; build/setup.sh installs it)", b)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("tgt: tgtd needs root")
	}
	return nil
}

// Options say where a daemon listens.
type Options struct {
	// Addr is the portal address (default 127.0.0.1); Port 0 picks a free one.
	Addr string
	Port int
	// ControlPort is tgtd's management port (a unix socket name; 0 picks one).
	ControlPort int
	// Netns runs tgtd inside this network namespace (ip netns exec).
	Netns string
	// Log receives tgtd's output (default: discarded).
	Log *os.File
}

// Daemon is one running tgtd.
type Daemon struct {
	Opts   Options
	Portal string // host:port

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	targets []targetSpec
}

type targetSpec struct {
	tid      int
	iqn      string
	luns     map[int]string
	accounts []Account
}

// Account is a CHAP account bound to a target. Outgoing accounts are the
// target's own credentials for mutual CHAP.
type Account struct {
	User, Secret string
	Outgoing     bool
}

// tgtd takes control ports up to 32767; each names a unix socket
// /var/run/tgtd/socket.N, left behind when a tgtd is killed.
const minControl, maxControl = 10000, 32767

var portMu sync.Mutex
var nextControl = minControl + os.Getpid()%(maxControl-minControl)

// freeControlPort returns a control port no live tgtd answers on.
func freeControlPort() int {
	portMu.Lock()
	defer portMu.Unlock()
	for {
		nextControl++
		if nextControl > maxControl {
			nextControl = minControl
		}
		c, err := net.DialTimeout("unix", fmt.Sprintf("/var/run/tgtd/socket.%d", nextControl), 100*time.Millisecond)
		if err != nil {
			return nextControl
		}
		c.Close()
	}
}

// FreePort returns a TCP port free on addr a moment ago, below the kernel's
// ephemeral range (internal/freeport): a port taken with :0 and closed again can
// be the next :0 pick of a server started meanwhile.
func FreePort(addr string) (int, error) { return freeport.TCP(addr) }

// Start runs tgtd and waits until its control socket answers and its portal
// accepts connections.
func Start(ctx context.Context, o Options) (*Daemon, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1"
	}
	if err := os.MkdirAll("/var/run/tgtd", 0o755); err != nil {
		return nil, fmt.Errorf("tgt: %w", err)
	}
	if o.Port == 0 && o.Netns != "" {
		o.Port = 3260
	}
	pickPort, pick := o.Port == 0, o.ControlPort == 0
	for try := 0; ; try++ {
		if pickPort {
			p, err := FreePort(o.Addr)
			if err != nil {
				return nil, err
			}
			o.Port = p
		}
		if pick {
			o.ControlPort = freeControlPort()
		}
		d := &Daemon{Opts: o, Portal: net.JoinHostPort(o.Addr, strconv.Itoa(o.Port))}
		err := d.start(ctx)
		if err == nil {
			return d, nil
		}
		if !pick && !pickPort || try >= 4 {
			return nil, err
		}
	}
}

func (d *Daemon) start(ctx context.Context) error {
	o := d.Opts
	args := []string{"-f", "--iscsi", "portal=" + d.Portal, "--control-port", strconv.Itoa(o.ControlPort)}
	var cmd *exec.Cmd
	if o.Netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", o.Netns, "tgtd"}, args...)...)
	} else {
		cmd = exec.Command("tgtd", args...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if o.Log != nil {
		cmd.Stdout, cmd.Stderr = o.Log, o.Log
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("tgt: start tgtd: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("tgt: tgtd on %s exited at start (control port %d in use?)", d.Portal, o.ControlPort)
		default:
		}
		// Ready when the control port answers and our portal accepts: the
		// portal proves the answering daemon is this one, not another tgtd
		// that already held the control port (this one then exits).
		if _, err := d.adm("--op", "show", "--mode", "sys"); err == nil {
			if c, err := net.DialTimeout("tcp", d.Portal, 200*time.Millisecond); err == nil {
				c.Close()
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.Kill()
			return fmt.Errorf("tgt: tgtd on %s did not come up", d.Portal)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// adm runs tgtadm against this daemon.
func (d *Daemon) adm(args ...string) (string, error) {
	full := append([]string{"--lld", "iscsi", "--control-port", strconv.Itoa(d.Opts.ControlPort)}, args...)
	var out bytes.Buffer
	c := exec.Command("tgtadm", full...)
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("tgt: tgtadm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// AddTarget creates target tid with the IQN, its LUNs (number -> backing file),
// binds it to every initiator address, and binds the CHAP accounts.
func (d *Daemon) AddTarget(tid int, iqn string, luns map[int]string, accounts ...Account) error {
	ts := targetSpec{tid: tid, iqn: iqn, luns: luns, accounts: accounts}
	if err := d.apply(ts); err != nil {
		return err
	}
	d.mu.Lock()
	d.targets = append(d.targets, ts)
	d.mu.Unlock()
	return nil
}

func (d *Daemon) apply(ts targetSpec) error {
	tid := strconv.Itoa(ts.tid)
	if _, err := d.adm("--op", "new", "--mode", "target", "--tid", tid, "-T", ts.iqn); err != nil {
		return err
	}
	for lun, file := range ts.luns {
		if _, err := d.adm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", strconv.Itoa(lun), "-b", file); err != nil {
			return err
		}
	}
	if _, err := d.adm("--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL"); err != nil {
		return err
	}
	for _, a := range ts.accounts {
		if _, err := d.adm("--op", "new", "--mode", "account", "--user", a.User, "--password", a.Secret); err != nil &&
			!strings.Contains(err.Error(), "exist") {
			return err
		}
		args := []string{"--op", "bind", "--mode", "account", "--tid", tid, "--user", a.User}
		if a.Outgoing {
			args = append(args, "--outgoing")
		}
		if _, err := d.adm(args...); err != nil {
			return err
		}
	}
	return nil
}

// SetParam sets a target's iSCSI parameter, e.g. HeaderDigest=CRC32C,None.
func (d *Daemon) SetParam(tid int, name, value string) error {
	_, err := d.adm("--op", "update", "--mode", "target", "--tid", strconv.Itoa(tid), "-n", name, "-v", value)
	return err
}

// Show returns tgtadm's description of the targets.
func (d *Daemon) Show() (string, error) {
	return d.adm("--op", "show", "--mode", "target")
}

// Pid returns tgtd's process id.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

func (d *Daemon) signal(s syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Signal(s)
}

// Freeze stops tgtd with SIGSTOP: its sockets stay open and silent.
func (d *Daemon) Freeze() error { return d.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen tgtd.
func (d *Daemon) Thaw() error { return d.signal(syscall.SIGCONT) }

// Kill ends tgtd with SIGKILL (its connections are reset) and waits for it.
func (d *Daemon) Kill() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Kill()
	<-exited
}

// Restart starts tgtd again after Kill, on the same portal and control port,
// and re-creates every target added so far.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.start(ctx); err != nil {
		return err
	}
	d.mu.Lock()
	ts := append([]targetSpec(nil), d.targets...)
	d.mu.Unlock()
	for _, t := range ts {
		if err := d.apply(t); err != nil {
			return err
		}
	}
	return nil
}

// Stop ends tgtd. It is safe to call more than once.
func (d *Daemon) Stop() { d.Kill() }
