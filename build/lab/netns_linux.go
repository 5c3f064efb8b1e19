package lab

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNS is the root-mode lab network: a network namespace the lab creates, holding a
// bridge (br0, 10.77.0.1/24) and one tap per node. qemu stays in the host namespace
// (so its user-net port forwards still reach host loopback) and gets each tap as an
// open file descriptor.
type NetNS struct {
	Name string
}

const labBridge = "br0"

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateNetNS creates the namespace with its bridge.
//
// The bridge is up with carrier and an IPv6 link-local address before any box
// powers on: a veth pair (lab0 on the bridge, lab0p up beside it) is its first
// port, and duplicate address detection is off on it. A bridge without ports has
// no carrier, so it got its link-local address only when the first box's tap
// joined, and then only after DAD (~1 s): the boot server could not send a router
// advertisement meanwhile, and iPXE, which waits for one after its DHCP, retried
// its router solicitations for ~2 s before fetching the boot script.
func CreateNetNS(name string) (*NetNS, error) {
	if err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	n := &NetNS{Name: name}
	fail := func(err error) (*NetNS, error) {
		n.Delete()
		return nil, err
	}
	for _, a := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", labBridge, "type", "bridge"},
		{"addr", "add", "10.77.0.1/24", "dev", labBridge},
		{"link", "add", "lab0", "type", "veth", "peer", "name", "lab0p"},
		{"link", "set", "lab0", "master", labBridge, "up"},
		{"link", "set", "lab0p", "up"},
	} {
		if err := ipCmd(append([]string{"-n", name}, a...)...); err != nil {
			return fail(err)
		}
	}
	if err := inNetNS(name, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/"+labBridge+"/accept_dad", []byte("0"), 0o644)
	}); err != nil {
		return fail(fmt.Errorf("bridge: no DAD: %w", err))
	}
	if err := ipCmd("-n", name, "link", "set", labBridge, "up"); err != nil {
		return fail(err)
	}
	return n, nil
}

// Delete removes the namespace (its bridge and any taps go with it).
func (n *NetNS) Delete() error { return ipCmd("netns", "del", n.Name) }

// inNetNS runs f on an OS thread switched into the named namespace; the thread is
// discarded afterwards.
func inNetNS(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread exits with the goroutine
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// OpenTap creates tap device name inside the namespace, attached to the bridge, and
// returns its file descriptor for qemu (-netdev tap,fd=N). The tap lives as long as
// some process holds the descriptor.
func (n *NetNS) OpenTap(name string) (*os.File, error) {
	var f *os.File
	err := inNetNS(n.Name, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:unix.IFNAMSIZ-1], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, e)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ipCmd("-n", n.Name, "link", "set", name, "master", labBridge, "up"); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
