package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"xedge/build/lab"
)

func init() {
	register("lab", "qemu harness: lab up -n N | console NODE | kill NODE | status | down", runLab)
}

const labUsage = `usage: xedge lab COMMAND
  up -n N [--domain D] [--params "xedge.k=v ..."] [--mode mcast|netns] [--cluster-key K]
                                                     boot N nodes on one virtual L2 segment
  console NODE                                       attach to a node's serial console (Ctrl-] leaves)
  console NODE COMMAND ...                           run one console shell command and print its output
  kill NODE                                          kill a node's qemu
  status                                             list nodes
  down                                               stop every node and the segment's DHCP server
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
	case "kill":
		if len(rest) != 2 {
			return errors.New("usage: xedge lab kill NODE")
		}
		return lab.Kill(*dir, rest[1])
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
		ns := sfs.String("netns", "", "network namespace with the lab bridge (root mode)")
		domain := sfs.String("domain", "", "domain to serve")
		if err := sfs.Parse(rest[1:]); err != nil {
			return err
		}
		if *ns != "" {
			return lab.ServeNetNSDHCP(ctx, *ns, *domain)
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
	key := fs.String("cluster-key", "", "make the nodes one xmppd cluster with this key (16+ bytes): node1 bootstraps, the others join it")
	mode := fs.String("mode", defMode, "mcast: qemu multicast segment, no root; netns: bridge and taps in a namespace the lab creates (root)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	absDir, _ := filepath.Abs(dir)
	st, lines, err := lab.Up(ctx, lab.UpOptions{
		Dir: dir, Kernel: filepath.Join(imageDir, "vmlinux"), Initrd: filepath.Join(imageDir, "initramfs.cpio"),
		Nodes: *n, Domain: *domain, Params: *params, Mode: *mode, ClusterKey: *key, Log: os.Stderr,
		Self: []string{self, "lab", "--dir", absDir, "segment"},
	})
	for _, l := range lines {
		fmt.Println(l)
	}
	if st != nil {
		where := "multicast group " + st.Group
		if st.NetNS != "" {
			where = "bridge br0 in netns " + st.NetNS
		}
		fmt.Printf("segment: %s; consoles: xedge lab console node1..node%d; stop: xedge lab down\n", where, len(st.Nodes))
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
