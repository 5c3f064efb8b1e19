package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"xedge/init/boot"
	"xedge/init/config"
	"xedge/init/console"
	"xedge/init/supervise"
	"xedge/xmppd/ctl"
)

// shell runs the restricted admin shell on the console for the life of the machine.
func (n *node) shell(ctx context.Context) {
	sh := console.NewShell("xedge> ", n.shellCommands())
	sh.Run(ctx, consoleOut{n.con})
}

type consoleOut struct{ c *console.Console }

// Write converts bare LF to CRLF: the line editor may leave the tty in raw mode.
func (o consoleOut) Write(b []byte) (int, error) {
	s := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n", "\r\n")
	if _, err := o.c.Write([]byte(s)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// shellCommands is xmppctl's command table (dispatched in-process to xmppd/ctl over
// the admin socket) plus init's own commands.
func (n *node) shellCommands() []console.Command {
	var cmds []console.Command
	for _, c := range ctl.Commands() {
		name := c.Name
		cc := console.Command{Name: c.Name, Usage: c.Usage, Summary: c.Summary,
			Run: func(ctx context.Context, args []string, out io.Writer) error {
				code := ctl.Run(ctx, config.AdminSocket, append([]string{name}, args...), out, out)
				if code != 0 {
					return fmt.Errorf("%s failed (exit %d)", name, code)
				}
				return nil
			}}
		if name == "loglevel" {
			cc.Args = []string{"get", "set"}
		}
		cmds = append(cmds, cc)
	}
	cmds = append(cmds,
		console.Command{Name: "node", Summary: "this node: state, addresses, configuration, xmppd supervision", Run: n.cmdNode},
		console.Command{Name: "log", Usage: "[N]", Summary: "last N lines of init's and xmppd's log (default 40)", Run: n.cmdLog},
		console.Command{Name: "dmesg", Usage: "[N]", Summary: "last N kernel log records (default 40)", Run: n.cmdDmesg},
		console.Command{Name: "revive", Summary: "start xmppd again after it gave up (clears its restart history)", Run: n.cmdRevive},
		console.Command{Name: "reboot", Summary: "stop xmppd cleanly and reboot", Run: n.powerCmd(boot.Reboot)},
		console.Command{Name: "poweroff", Summary: "stop xmppd cleanly and power off", Run: n.powerCmd(boot.PowerOff)},
	)
	if n.getCfg().Debug {
		cmds = append(cmds,
			console.Command{Name: "debug-kill-xmppd", Summary: "TEST ONLY (xedge.debug=1): SIGKILL xmppd",
				Run: func(context.Context, []string, io.Writer) error { return n.killXmppd() }},
			console.Command{Name: "debug-dial", Usage: "HOST:PORT", Summary: "TEST ONLY (xedge.debug=1): open a TCP connection and report",
				Run: func(ctx context.Context, args []string, out io.Writer) error {
					if len(args) != 1 {
						return errors.New("usage: debug-dial HOST:PORT")
					}
					d := net.Dialer{Timeout: 5 * time.Second}
					c, err := d.DialContext(ctx, "tcp", args[0])
					if err != nil {
						return err
					}
					fmt.Fprintf(out, "connected %s -> %s\n", c.LocalAddr(), c.RemoteAddr())
					return c.Close()
				}},
			console.Command{Name: "debug-iptables", Summary: "TEST ONLY (xedge.debug=1): show the firewall (iptables -S)",
				Run: func(ctx context.Context, _ []string, out io.Writer) error {
					return n.runReaped(ctx, out, "/usr/sbin/iptables", "-S")
				}},
		)
	}
	return cmds
}

func (n *node) powerCmd(a boot.Action) func(context.Context, []string, io.Writer) error {
	return func(_ context.Context, args []string, out io.Writer) error {
		if len(args) != 0 {
			return errors.New("takes no arguments")
		}
		n.requestPower(a)
		return nil
	}
}

func (n *node) cmdNode(_ context.Context, _ []string, out io.Writer) error {
	n.mu.Lock()
	state, host, lease, ready, sup := n.state, n.hostname, n.primary, n.ready, n.sup
	var ifs []string
	for name, d := range n.dhcp {
		l := d.Lease()
		ifs = append(ifs, fmt.Sprintf("%s %s (server %s, renew in %s)", name, ipOf(l.Addr), l.Server, time.Until(l.ObtainedAt.Add(l.Renew)).Round(time.Second)))
	}
	n.mu.Unlock()
	c := n.getCfg()
	fmt.Fprintf(out, "state     %s\n", state)
	fmt.Fprintf(out, "uptime    %s\n", time.Since(n.start).Round(time.Second))
	fmt.Fprintf(out, "hostname  %s\n", host)
	fmt.Fprintf(out, "address   %s\n", ipOf(lease.Addr))
	for _, s := range ifs {
		fmt.Fprintf(out, "  %s\n", s)
	}
	for _, l := range c.Describe() {
		fmt.Fprintln(out, l)
	}
	if sup != nil {
		st := sup.Status()
		fmt.Fprintf(out, "xmppd     %s pid %d, %d restarts in window, %d total", st.State, st.PID, st.Restarts, st.Total)
		if st.LastExit != "" {
			fmt.Fprintf(out, ", last exit: %s", st.LastExit)
		}
		fmt.Fprintln(out)
		if st.Reason != "" {
			fmt.Fprintf(out, "down      %s\n", st.Reason)
		}
	}
	if ready != "" {
		fmt.Fprintf(out, "last      %s\n", ready)
	}
	for _, p := range c.Problems {
		fmt.Fprintf(out, "problem   %s\n", p)
	}
	n.mu.Lock()
	quarantine := append([]string(nil), n.quarantine...)
	n.mu.Unlock()
	for _, q := range quarantine {
		fmt.Fprintf(out, "quarantine %s\n", q)
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(out, "warning   %s\n", w)
	}
	fmt.Fprintf(out, "init      %s\n", version)
	return nil
}

func (n *node) cmdLog(_ context.Context, args []string, out io.Writer) error {
	lines := 40
	if len(args) > 1 {
		return errors.New("usage: log [N]")
	}
	if len(args) == 1 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v <= 0 {
			return fmt.Errorf("log: %q is not a positive number", args[0])
		}
		lines = v
	}
	for _, l := range n.sink.Tail(lines) {
		fmt.Fprintln(out, l)
	}
	return nil
}

// runReaped runs a program to completion with its output on out; its exit status
// comes through PID 1's reaper (exec.Cmd.Wait would race with it).
func (n *node) runReaped(ctx context.Context, out io.Writer, path string, args ...string) error {
	c := &supervise.Command{Path: path, Args: args, Env: []string{"PATH=/bin:/sbin:/usr/sbin:/usr/bin"}, Output: out, Reaper: n.reaper}
	p, err := c.Start(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		return fmt.Errorf("%s: timed out", path)
	}
}

func (n *node) cmdDmesg(_ context.Context, args []string, out io.Writer) error {
	lines := 40
	if len(args) == 1 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v <= 0 {
			return fmt.Errorf("dmesg: %q is not a positive number", args[0])
		}
		lines = v
	} else if len(args) > 1 {
		return errors.New("usage: dmesg [N]")
	}
	recs, err := readKmsg()
	if err != nil {
		return err
	}
	if len(recs) > lines {
		recs = recs[len(recs)-lines:]
	}
	for _, r := range recs {
		fmt.Fprintln(out, r)
	}
	return nil
}

// readKmsg returns the kernel log records currently buffered, "[seconds] message".
func readKmsg() ([]string, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	var recs []string
	buf := make([]byte, 8192)
	for i := 0; i < 100000; i++ {
		nr, err := unix.Read(fd, buf)
		if err == unix.EPIPE { // overwritten records: skip
			continue
		}
		if err != nil || nr <= 0 {
			break
		}
		head, msg, ok := strings.Cut(string(buf[:nr]), ";")
		if !ok {
			continue
		}
		msg, _, _ = strings.Cut(msg, "\n")
		f := strings.Split(head, ",")
		ts := ""
		if len(f) >= 3 {
			if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				ts = fmt.Sprintf("[%5d.%06d] ", us/1e6, us%1e6)
			}
		}
		recs = append(recs, ts+msg)
	}
	return recs, nil
}

func (n *node) cmdRevive(context.Context, []string, io.Writer) error {
	n.mu.Lock()
	sup := n.sup
	n.mu.Unlock()
	if sup == nil {
		return errors.New("xmppd is not supervised (maintenance: see `node`)")
	}
	return sup.Revive()
}
