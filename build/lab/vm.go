// Package lab is the qemu harness: it boots the appliance image (the PVH vmlinux and
// the initramfs) in TCG virtual machines on a virtual L2 segment, exposes their serial
// consoles, and — for `xedge lab` — keeps a small state directory so nodes can be
// listed, attached to, killed and torn down from separate invocations.
//
// It is host tooling: runtime code must not import it.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xedge/internal/freeport"
)

// NIC is one virtual network card of a VM.
type NIC struct {
	// Kind is "user" (qemu user networking, restricted: the guest reaches nothing but
	// the forwarded ports), "mcast" (an L2 segment shared by VMs through a UDP
	// multicast group) or "tap" (an existing tap device, root mode).
	Kind  string
	MAC   string
	Mcast string // 230.0.0.1:1234 for Kind "mcast"
	Tap   string // tap device for Kind "tap"
	// TapFile is an open tap for Kind "tapfd" (root mode: a tap inside the lab's
	// network namespace, handed to qemu as a file descriptor).
	TapFile *os.File
	// Forwards maps host ports on 127.0.0.1 to guest TCP ports (Kind "user").
	Forwards map[int]int
	// Boot gives the NIC its iPXE option ROM (qemu's default for the model) and
	// makes it the first boot device: the VM PXE-boots from it.
	Boot bool
}

// Config describes one VM.
type Config struct {
	Name    string
	Kernel  string // PVH vmlinux (or a bzImage); empty: boot from the network (a NIC with Boot)
	Initrd  string
	Params  string // appended to the kernel command line
	Cmdline string // base kernel command line (image.Cmdline when empty)
	MemMB   int
	Dir     string // state dir: console.sock, console.log, qemu.pid
	NICs    []NIC
	// Daemonize leaves qemu running after this process exits (xedge lab); the
	// console then does not wait for a client, and console.log keeps all output.
	Daemonize bool
	QEMU      string // qemu-system-x86_64 path
	// Machine and CPU override qemu's -machine (q35) and -cpu (max). Keep a CPU with
	// RDRAND (max has it): without it the guest's RNG is not seeded early and Go's
	// crypto/rand (DHCP transaction IDs, TLS keys) blocks for a long time under TCG.
	Machine, CPU string
	// SMP is the number of vCPUs (default 1: each is a host thread under TCG, and the
	// lab host has 2 cores for several VMs).
	SMP int
	// Nice, when non-zero, runs qemu (all its threads) at this nice value: a negative
	// one lets a boot-time measurement on a busy shared host approach an idle host's.
	Nice int
}

// VM is a started qemu.
type VM struct {
	Config  Config
	Started time.Time
	PID     int
	cmd     *exec.Cmd
	Console *Console
	exited  chan struct{}
	exitErr error
}

// DefaultCmdline mirrors image.Cmdline (lab must not import runtime packages' data
// twice; keep them equal).
const DefaultCmdline = "console=ttyS0 quiet loglevel=3 panic=-1"

// Args returns qemu's command line for c.
func (c Config) Args() []string {
	mem := c.MemMB
	if mem == 0 {
		mem = 384
	}
	cmdline := c.Cmdline
	if cmdline == "" {
		cmdline = DefaultCmdline
	}
	if c.Params != "" {
		cmdline += " " + c.Params
	}
	sock := filepath.Join(c.Dir, "console.sock")
	wait := "on"
	if c.Daemonize {
		wait = "off"
	}
	machine, cpu := c.Machine, c.CPU
	if machine == "" {
		machine = "q35"
	}
	if cpu == "" {
		cpu = "max"
	}
	smp := c.SMP
	if smp <= 0 {
		smp = 1
	}
	args := []string{
		"-name", c.Name,
		"-machine", machine, "-accel", "tcg", "-cpu", cpu, "-smp", strconv.Itoa(smp), "-m", strconv.Itoa(mem),
		"-nodefaults", "-display", "none", "-no-reboot",
	}
	if c.Kernel != "" {
		args = append(args, "-kernel", c.Kernel, "-initrd", c.Initrd, "-append", cmdline)
	}
	args = append(args,
		"-chardev", fmt.Sprintf("socket,id=con0,path=%s,server=on,wait=%s,logfile=%s", sock, wait, filepath.Join(c.Dir, "console.log")),
		"-serial", "chardev:con0",
		// A second port (ttyS1) recorded to node.log: with xedge.debug=1 init mirrors
		// its and xmppd's log there (appended across power cycles of the node).
		"-chardev", fmt.Sprintf("file,id=log0,path=%s,append=on", filepath.Join(c.Dir, "node.log")),
		"-serial", "chardev:log0",
		"-pidfile", filepath.Join(c.Dir, "qemu.pid"),
		// The human monitor, for `system_powerdown` (ACPI power button) and the like.
		"-monitor", fmt.Sprintf("unix:%s,server=on,wait=off", filepath.Join(c.Dir, "monitor.sock")),
	)
	fdNum := 3
	for i, n := range c.NICs {
		id := fmt.Sprintf("n%d", i)
		var nd string
		switch n.Kind {
		case "user":
			nd = "user,id=" + id + ",restrict=on"
			for h, g := range n.Forwards {
				nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", h, g)
			}
		case "mcast":
			nd = fmt.Sprintf("socket,id=%s,mcast=%s,localaddr=127.0.0.1", id, n.Mcast)
		case "tap":
			nd = fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, n.Tap)
		case "tapfd":
			nd = fmt.Sprintf("tap,id=%s,fd=%d", id, fdNum)
			fdNum++
		}
		dev := "virtio-net-pci,netdev=" + id + ",romfile="
		if n.Boot {
			dev = "virtio-net-pci,netdev=" + id + ",bootindex=1"
		}
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		args = append(args, "-netdev", nd, "-device", dev)
	}
	if c.Daemonize {
		args = append(args, "-daemonize")
	}
	return args
}

// Start boots the VM. Without Daemonize the VM is a child of this process and its
// console is connected before the guest runs (no output is lost).
func Start(ctx context.Context, c Config) (*VM, error) {
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("vm dir: %w", err)
	}
	_ = os.Remove(filepath.Join(c.Dir, "console.sock"))
	_ = os.Remove(filepath.Join(c.Dir, "console.log"))
	q := c.QEMU
	if q == "" {
		q = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(q); err != nil {
		return nil, fmt.Errorf("qemu: %w (install qemu-system-x86)", err)
	}
	cmd := exec.Command(q, c.Args()...)
	if c.Nice != 0 {
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(c.Nice), q}, c.Args()...)...)
	}
	logf, err := os.Create(filepath.Join(c.Dir, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, n := range c.NICs {
		if n.Kind == "tapfd" {
			cmd.ExtraFiles = append(cmd.ExtraFiles, n.TapFile)
		}
	}
	vm := &VM{Config: c, cmd: cmd, exited: make(chan struct{}), Started: time.Now()}
	if c.Daemonize {
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(filepath.Join(c.Dir, "qemu.log"))
			return nil, fmt.Errorf("qemu: %w: %s", err, b)
		}
		pid, err := ReadPID(c.Dir)
		if err != nil {
			return nil, err
		}
		vm.PID = pid
		close(vm.exited)
		return vm, nil
	}
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	vm.PID = cmd.Process.Pid
	go func() {
		vm.exitErr = cmd.Wait()
		close(vm.exited)
	}()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	con, err := DialConsole(dctx, filepath.Join(c.Dir, "console.sock"))
	if err != nil {
		vm.Kill()
		b, _ := os.ReadFile(filepath.Join(c.Dir, "qemu.log"))
		return nil, fmt.Errorf("%w; qemu log: %s", err, b)
	}
	vm.Console = con
	return vm, nil
}

// Exited is closed when a child qemu exits.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Kill stops qemu (SIGKILL) and waits for it when it is our child.
func (v *VM) Kill() {
	if v.PID > 0 {
		_ = syscall.Kill(v.PID, syscall.SIGKILL)
	}
	if v.cmd != nil && !v.Config.Daemonize {
		select {
		case <-v.exited:
		case <-time.After(10 * time.Second):
		}
	}
	if v.Console != nil {
		v.Console.Close()
	}
}

// Monitor sends one command to qemu's human monitor (e.g. "system_powerdown").
func Monitor(dir, command string) error {
	c, err := net.DialTimeout("unix", filepath.Join(dir, "monitor.sock"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("qemu monitor: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return fmt.Errorf("qemu monitor: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // let qemu read it before the socket closes
	return nil
}

// ReadPID reads qemu.pid from a VM directory.
func ReadPID(dir string) (int, error) {
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, errors.New("no qemu.pid in " + dir)
}

// FreePort returns a TCP port on 127.0.0.1 free a moment ago (for a qemu host
// forward), below the kernel's ephemeral range (internal/freeport): one taken
// with :0 and closed again is the next :0 bind's pick on the host (a test
// server's listener), which then collides with qemu's forward.
func FreePort() (int, error) {
	return freeport.TCP("127.0.0.1")
}

// CPUSeconds is the user+system CPU time qemu has used so far: a figure for boot cost
// that, unlike wall time, does not grow when a shared host is busy.
func (v *VM) CPUSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", v.PID))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100 // USER_HZ
}
