package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"xedge/image"
	"xedge/image/pxe"
)

func init() {
	register("pxe", "network boot server: DHCP (full or proxy), router advertisements, HTTP, TFTP", runPXE)
}

const pxeUsage = `usage: xedge pxe --interface IF [flags]
Boots xedge boxes on the segment of IF with the image in --image (vmlinuz and
initramfs.cpio.zst or .xz from ` + "`xedge image`" + `). Every box gets the same site parameters
(domain, cluster key, seeds): a box needs no configuration of its own.

  --mode full --range FIRST-LAST   hand out addresses (no other DHCP server on the segment)
  --mode proxy                     ProxyDHCP: boot information only, beside the site's DHCP server`

func runPXE(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pxe", flag.ContinueOnError)
	ifname := fs.String("interface", "", "interface of the boot segment (required)")
	mode := fs.String("mode", pxe.ModeProxy, "full (hand out addresses) or proxy (beside an existing DHCP server)")
	rng := fs.String("range", "", "full mode: address range FIRST-LAST on the interface's subnet")
	router := fs.String("router", "", "full mode: default router to hand out (none by default)")
	dns := fs.String("dns", "", "full mode: DNS servers to hand out, comma-separated")
	lease := fs.Duration("lease", time.Hour, "full mode: lease time")
	imageDir := fs.String("image", "out", "directory with vmlinuz and initramfs.cpio.xz")
	initrd := fs.String("initrd", "", "initramfs file name in --image (default: initramfs.cpio.zst, else initramfs.cpio.xz)")
	domain := fs.String("domain", "", "XMPP domain served by the boxes (xedge.domain)")
	keyFile := fs.String("key-file", "out/cluster.key", "cluster key file; created with a random key when missing")
	seeds := fs.String("seeds", "", "none (xmppd's discovery finds the cluster on the segment), host[:port],... of cluster nodes, or auto (the boxes booted before: only for xmppd without discovery, whose auto-join waits for the lowest-named node)")
	port := fs.Int("http-port", 80, "HTTP port for the boot script, kernel, initramfs and parameters")
	tftpDir := fs.String("tftp-dir", "/usr/lib/ipxe", "directory with undionly.kpxe / ipxe.efi for legacy PXE firmware (empty: no TFTP)")
	noRA := fs.Bool("no-ra", false, "send no IPv6 router advertisements (iPXE then waits ~13 s)")
	var params multiFlag
	fs.Var(&params, "param", "another xedge.* parameter for every box, e.g. --param xedge.storage=iscsi://... (repeatable)")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, pxeUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ifname == "" {
		fs.Usage()
		return errors.New("pxe: --interface is required")
	}
	key, created, err := loadOrCreateKey(*keyFile)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(os.Stderr, "pxe: created cluster key %s (keep it: every box of this cluster gets it)\n", *keyFile)
	}
	p := map[string]string{"key": key}
	if *domain != "" {
		p["domain"] = *domain
	}
	if *seeds != "auto" && *seeds != "" {
		p["seeds"] = *seeds
	}
	for _, kv := range params {
		k, v, ok := strings.Cut(strings.TrimPrefix(kv, "xedge."), "=")
		if !ok || k == "" {
			return fmt.Errorf("pxe: --param %q: want xedge.KEY=VALUE", kv)
		}
		p[k] = v
	}
	td := *tftpDir
	if td != "" {
		if _, err := os.Stat(td); err != nil {
			fmt.Fprintf(os.Stderr, "pxe: no TFTP (%v): legacy PXE firmware will not boot; iPXE firmware (qemu, most NICs flashed with iPXE) does\n", err)
			td = ""
		}
	}
	cfg := pxe.Config{
		Interface: *ifname, Mode: *mode, TFTPDir: td, NoRA: *noRA, HTTPPort: *port,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Boot: pxe.Boot{Kernel: filepath.Join(*imageDir, "vmlinuz"), Initrd: pxeInitrd(*imageDir, *initrd),
			Cmdline: image.Cmdline, Params: p, AutoSeeds: *seeds == "auto"},
	}
	if *mode == pxe.ModeFull {
		pool, err := poolFor(*ifname, *rng, *lease)
		if err != nil {
			return err
		}
		cfg.Pool = pool
		cfg.Domain = *domain
		if *router != "" {
			if cfg.Router, err = netip.ParseAddr(*router); err != nil {
				return fmt.Errorf("pxe: --router: %w", err)
			}
		}
		for _, d := range strings.Split(*dns, ",") {
			if d = strings.TrimSpace(d); d != "" {
				a, err := netip.ParseAddr(d)
				if err != nil {
					return fmt.Errorf("pxe: --dns: %w", err)
				}
				cfg.DNS = append(cfg.DNS, a)
			}
		}
	}
	srv, err := pxe.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pxe: serving %s on %s (%s DHCP); boxes: %sboxes; Ctrl-C stops\n", srv.URL(), *ifname, *mode, srv.URL())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Stop(sctx)
}

// loadOrCreateKey reads a cluster key file, or creates it (0600) with 32 random
// bytes in base64 when it does not exist.
func loadOrCreateKey(path string) (key string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key = strings.TrimSpace(string(b))
		if len(key) < 16 {
			return "", false, fmt.Errorf("pxe: cluster key in %s is %d bytes: want at least 16", path, len(key))
		}
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("pxe: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, err
	}
	key = base64.StdEncoding.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, err
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("pxe: %w", err)
	}
	return key, true, nil
}

// poolFor builds the full-mode pool: FIRST-LAST on the interface's IPv4 subnet.
func poolFor(ifname, rng string, lease time.Duration) (*pxe.Pool, error) {
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return nil, errors.New("pxe: full mode needs --range FIRST-LAST")
	}
	f, err1 := netip.ParseAddr(strings.TrimSpace(first))
	l, err2 := netip.ParseAddr(strings.TrimSpace(last))
	if err := errors.Join(err1, err2); err != nil || !f.Is4() || l.Less(f) {
		return nil, fmt.Errorf("pxe: --range %q: want FIRST-LAST IPv4 addresses, FIRST <= LAST", rng)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("pxe: %w", err)
	}
	as, _ := ifi.Addrs()
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Contains(f) && p.Contains(l) {
			return &pxe.Pool{Prefix: p.Masked(), First: f, Last: l, Lease: lease}, nil
		}
	}
	return nil, fmt.Errorf("pxe: --range %s is not on a subnet of %s", rng, ifname)
}
