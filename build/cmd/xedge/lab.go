package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"xedge/build/lab"
)

func init() {
	register("lab", "qemu harness: lab up -n N [--pxe] [--storage] | console NODE | kill|freeze|thaw NODE | storage stop|freeze|start [NODE] | status | down", runLab)
}

const labUsage = `usage: xedge lab COMMAND
  up -n N [--pxe|--direct] [--storage] [--domain D] [--params "xedge.k=v ..."] [--mode mcast|netns] [--cluster-key K] [--ipxe-wait]
                                   boot N nodes on one virtual L2 segment; --pxe: from the lab's PXE
                                   server (root), --storage: an iSCSI LUN each (tgtd, root);
                                   --ipxe-wait: no key pressed through iPXE's 2 s prompt
  add [--direct] [--params P] [--ipxe-wait]
                                   boot one more node on the running lab's segment
  console NODE                     attach to a node's serial console (Ctrl-] leaves)
  console NODE COMMAND ...         run one console shell command and print its output
  kill NODE                        kill a node's qemu (a crash)
  freeze NODE | thaw NODE          SIGSTOP / SIGCONT a node's qemu (a hung box)
  storage stop|freeze|start|status [NODE]
                                   the nodes' iSCSI targets (all, or NODE's): stop kills tgtd,
                                   freeze SIGSTOPs it, start restarts or thaws it
  boxes                            what the PXE server has seen (MAC, address, boot steps)
  status                           list nodes
  down                             stop every node, the boot server and the targets
common flags (before the command): --dir out/lab --image out`

func runLab(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	dir := fs.String("dir", "out/lab", "lab state directory")
	imageDir := fs.String("image", "out", "directory with vmlinux and initramfs.cpio (from `xedge image`)")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, labUsage) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("lab: missing command")
	}
	switch rest[0] {
	case "up":
		return labUp(ctx, *dir, *imageDir, rest[1:])
	case "console":
		switch {
		case len(rest) == 2:
			return labConsole(*dir, rest[1])
		case len(rest) > 2:
			return labRun(ctx, *dir, rest[1], strings.Join(rest[2:], " "))
		}
		return errors.New("usage: xedge lab console NODE [COMMAND ...]")
	case "kill", "freeze", "thaw":
		if len(rest) != 2 {
			return fmt.Errorf("usage: xedge lab %s NODE", rest[0])
		}
		return map[string]func(string, string) error{"kill": lab.Kill, "freeze": lab.Freeze, "thaw": lab.Thaw}[rest[0]](*dir, rest[1])
	case "storage":
		if len(rest) < 2 || len(rest) > 3 {
			return errors.New("usage: xedge lab storage stop|freeze|start|status [NODE]")
		}
		out, err := lab.Control(*dir, strings.Join(rest, " "))
		fmt.Print(out)
		return err
	case "boxes":
		out, err := lab.Control(*dir, "boxes")
		fmt.Print(out)
		return err
	case "add":
		afs := flag.NewFlagSet("lab add", flag.ContinueOnError)
		direct := afs.Bool("direct", false, "boot the kernel directly even in a PXE lab")
		params := afs.String("params", "", "extra kernel parameters (direct boot)")
		ipxeWait := afs.Bool("ipxe-wait", false, "PXE: let iPXE's 2 s Ctrl-B prompt time out instead of pressing a key through it")
		if err := afs.Parse(rest[1:]); err != nil {
			return err
		}
		n, err := lab.AddNode(ctx, *dir, lab.AddOptions{Direct: *direct, Params: *params, IPXEWait: *ipxeWait})
		if err != nil {
			return err
		}
		line, err := lab.WaitConsole(ctx, filepath.Join(n.Dir, "console.log"), lab.ReadyOrMaint, 3*time.Minute)
		fmt.Printf("%s: %s (c2s 127.0.0.1:%d)\n", n.Name, line, n.Port)
		return err
	case "down":
		return lab.Down(*dir)
	case "status":
		lines, err := lab.Status(*dir)
		for _, l := range lines {
			fmt.Println(l)
		}
		return err
	case "segment": // internal: the segment's DHCP server, started by `up`
		sfs := flag.NewFlagSet("segment", flag.ContinueOnError)
		group := sfs.String("group", "", "multicast group:port (no-root mode)")
		_ = sfs.String("netns", "", "network namespace (root mode; names the process for `down`)")
		domain := sfs.String("domain", "", "domain to serve")
		boot := sfs.Bool("boot", false, "root mode: run the boot server (already inside the namespace)")
		kernel := sfs.String("kernel", "", "bzImage for PXE boots")
		initrd := sfs.String("initrd", "", "initramfs for PXE boots")
		cmdline := sfs.String("cmdline", "", "kernel command line for PXE boots")
		keyFile := sfs.String("key-file", "", "cluster key for PXE-booted nodes")
		nodes := sfs.Int("nodes", 0, "number of nodes (LUNs)")
		storage := sfs.Bool("storage", false, "one iSCSI LUN per node")
		timing := sfs.String("timing", "tcg", "xmppd timing for PXE-booted nodes: tcg (slower raft and gossip timeouts) or default")
		if err := sfs.Parse(rest[1:]); err != nil {
			return err
		}
		if *boot {
			key := ""
			if *keyFile != "" {
				b, err := os.ReadFile(*keyFile)
				if err != nil {
					return err
				}
				key = strings.TrimSpace(string(b))
			}
			return lab.ServeBoot(ctx, lab.BootServerOptions{Dir: *dir, Domain: *domain, Kernel: *kernel, Initrd: *initrd,
				Cmdline: *cmdline, Key: key, Nodes: *nodes, Storage: *storage, XmppdYAML: map[string]string{"tcg": lab.TCGTiming}[*timing]})
		}
		return lab.ServeSegment(ctx, *group, *domain)
	}
	fs.Usage()
	return fmt.Errorf("lab: unknown command %q", rest[0])
}

func labUp(ctx context.Context, dir, imageDir string, args []string) error {
	fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
	n := fs.Int("n", 1, "number of nodes")
	domain := fs.String("domain", "lab.example", "XMPP domain, served to the nodes by the segment's DHCP server (option 224)")
	params := fs.String("params", "", "extra kernel parameters for every node")
	defMode := "mcast"
	if os.Geteuid() == 0 {
		defMode = "netns"
	}
	key := fs.String("cluster-key", "", "make the nodes one xmppd cluster with this key (16+ bytes): node1 bootstraps, the others join it (--pxe: default a random key, handed out by the PXE server)")
	pxeBoot := fs.Bool("pxe", false, "boot the nodes from the network: the lab's PXE server (DHCP, RA, HTTP) on the bridge (root)")
	_ = fs.Bool("direct", true, "boot the PVH kernel directly (the default unless --pxe)")
	storage := fs.Bool("storage", false, "give every node an iSCSI LUN (tgtd in the lab's namespace, root)")
	mode := fs.String("mode", defMode, "mcast: qemu multicast segment, no root; netns: bridge and taps in a namespace the lab creates (root)")
	vip := fs.String("vip", "10.77.0.100/24", "root mode: a VIP pool on the nodes' segment NIC (empty: none)")
	dns := fs.Bool("dns", true, "root mode: every node serves the domain's DNS zone (SRV records) on port 53")
	ipxeWait := fs.Bool("ipxe-wait", false, "PXE: let iPXE's 2 s Ctrl-B prompt time out instead of pressing a key through it (the lab presses one by default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mode != "netns" {
		*vip, *dns = "", false
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	absDir, _ := filepath.Abs(dir)
	absImage, _ := filepath.Abs(imageDir)
	start := time.Now()
	st, lines, err := lab.Up(ctx, lab.UpOptions{
		Dir: dir, Kernel: filepath.Join(absImage, "vmlinux"), Initrd: filepath.Join(absImage, "initramfs.cpio"),
		PXE: *pxeBoot, PXEKernel: filepath.Join(absImage, "vmlinuz"), PXEInitrd: pxeInitrd(absImage, ""),
		Storage: *storage, MaxBoot: maxBoot(*pxeBoot, *n),
		Nodes: *n, Domain: *domain, Params: *params, Mode: *mode, ClusterKey: *key, Log: os.Stderr,
		VIP: *vip, DNS: *dns, IPXEWait: *ipxeWait,
		Self: []string{self, "lab", "--dir", absDir, "segment"},
	})
	if st != nil {
		printLab(os.Stdout, st, lines, time.Since(start))
	}
	return err
}

func labRun(ctx context.Context, dir, name, line string) error {
	st, err := lab.LoadState(dir)
	if err != nil {
		return err
	}
	n, err := st.Node(name)
	if err != nil {
		return err
	}
	out, err := lab.Run(ctx, filepath.Join(n.Dir, "console.sock"), line)
	fmt.Print(out)
	return err
}

func labConsole(dir, name string) error {
	st, err := lab.LoadState(dir)
	if err != nil {
		return err
	}
	n, err := st.Node(name)
	if err != nil {
		return err
	}
	fd := int(os.Stdin.Fd())
	if term.IsTerminal(fd) {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(fd, old)
	}
	fmt.Fprintf(os.Stderr, "connected to %s's console; Ctrl-] leaves\r\n", n.Name)
	return lab.Attach(filepath.Join(n.Dir, "console.sock"), os.Stdin, os.Stdout)
}

// maxBoot is how many nodes boot at once: a PXE cold boot powers every box on
// together (at most 3 on a 2-core host); direct boots go two at a time.
func maxBoot(pxeBoot bool, n int) int {
	if pxeBoot {
		return min(n, 3)
	}
	return 2
}

// printLab tells the operator what is up and how to use it.
func printLab(w io.Writer, st *lab.State, lines []string, took time.Duration) {
	where := "multicast group " + st.Group
	if st.NetNS != "" {
		where = "bridge br0 (10.77.0.1/24) in network namespace " + st.NetNS
	}
	fmt.Fprintf(w, "\nxedge lab: %d nodes, %s boot, domain %s, up in %.1f s\n", len(st.Nodes), st.Boot, st.Domain, took.Seconds())
	fmt.Fprintf(w, "segment: %s\n", where)
	for i, n := range st.Nodes {
		line := ""
		if i < len(lines) {
			line = strings.TrimPrefix(lines[i], n.Name+": ")
		}
		storage := ""
		if st.Storage {
			storage = "  LUN " + lab.StorageURL(i+1)
		}
		if secs := n.BootSeconds(); secs > 0 {
			line += fmt.Sprintf(" (%.1f s, qemu CPU %.1f s)", secs, n.ReadyCPU)
		}
		fmt.Fprintf(w, "  %-6s %-46s c2s 127.0.0.1:%-5d console: bin/xedge lab console %s%s\n", n.Name, line, n.Port, n.Name, storage)
	}
	if len(st.Nodes) > 0 {
		fmt.Fprintf(w, "client: register an account on any console (bin/xedge lab console node1 register alice secret),\n")
		fmt.Fprintf(w, "        then connect an XMPP client to 127.0.0.1:%d as alice@%s (STARTTLS, self-signed certificate)\n", st.Nodes[0].Port, st.Domain)
	}
	// The VIP and the DNS server live on the lab's segment, inside its namespace:
	// a client reaches them through `ip netns exec`.
	if st.VIP != "" && st.NetNS != "" {
		addr, _, _ := strings.Cut(st.VIP, "/")
		fmt.Fprintf(w, "VIP:      %s (one node holds it, another takes it over when it dies); from this host, run a client in the lab's namespace:\n", addr)
		fmt.Fprintf(w, "          ip netns exec %s CLIENT  (server %s, port 5222 STARTTLS, 5223 direct TLS; e.g. ip netns exec %s openssl s_client -connect %s:5222 -starttls xmpp -name %s)\n",
			st.NetNS, addr, st.NetNS, addr, st.Domain)
	}
	if st.DNS && st.NetNS != "" && len(st.Nodes) > 0 {
		server := "10.77.0.11"
		if st.VIP != "" {
			server, _, _ = strings.Cut(st.VIP, "/")
		}
		fmt.Fprintf(w, "DNS SRV:  ip netns exec %s dig +short @%s _xmpp-client._tcp.%s SRV   (any node answers on port 53; also _xmpps-client, A %s)\n",
			st.NetNS, server, st.Domain, st.Domain)
	}
	fmt.Fprintf(w, "failures: bin/xedge lab kill|freeze|thaw NODE; bin/xedge lab storage stop|freeze|start [NODE]\n")
	fmt.Fprintf(w, "stop:     bin/xedge lab down\n")
}

// pxeInitrd is the initramfs network boots get: name in dir when given, else the
// zstd archive (the kernel unpacks it fastest), else the xz one.
func pxeInitrd(dir, name string) string {
	if name != "" {
		return filepath.Join(dir, name)
	}
	for _, n := range []string{"initramfs.cpio.lz4", "initramfs.cpio.zst", "initramfs.cpio.xz"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return filepath.Join(dir, n)
		}
	}
	return filepath.Join(dir, "initramfs.cpio.xz")
}
