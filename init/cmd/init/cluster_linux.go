package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"xedge/image"
	"xedge/image/pxe"
	"xedge/init/config"
	"xedge/internal/backoff"
)

// fetchParams asks the boot server for this box's parameters (<boot>params?mac=M):
// the cluster key, seeds, domain and whatever else the site hands every box. It
// tries for up to 10 s (the server may be busy booting a rack of boxes).
func fetchParams(ctx context.Context, boot, ifname string) (config.Layer, error) {
	l := config.Layer{Source: "server", Values: map[string]string{}}
	u, err := url.Parse(boot)
	if err != nil {
		return l, fmt.Errorf("xedge.boot %q: %w", boot, err)
	}
	u = u.JoinPath("params")
	if ifi, err := net.InterfaceByName(ifname); err == nil && len(ifi.HardwareAddr) > 0 {
		u.RawQuery = url.Values{"mac": {ifi.HardwareAddr.String()}}.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last error
	for try := 0; try < 5 && ctx.Err() == nil; try++ {
		if try > 0 && backoff.Sleep(ctx, time.Duration(try)*500*time.Millisecond) != nil {
			break // the 10 s are up: last says why the tries failed
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return l, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("%s: %s", u, resp.Status)
			continue
		}
		return config.ParseParams("server", string(b)), nil
	}
	return l, fmt.Errorf("fetch %s: %w", u, last)
}

// enterQuarantine keeps the box out of the cluster: xmppd is stopped (or never
// started), so it joins nothing, serves nothing and can hold no VIP, and the
// console says why. Only a reboot with a fixed configuration leaves quarantine.
func (n *node) enterQuarantine(reasons ...string) {
	n.mu.Lock()
	if n.state == "quarantine" {
		n.mu.Unlock()
		return
	}
	n.state = "quarantine"
	n.quarantine = append(n.quarantine, reasons...)
	sup := n.sup
	n.mu.Unlock()
	if sup != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = sup.Stop(ctx)
		}()
	}
	n.log.Error("quarantine", "reasons", strings.Join(reasons, "; "))
	n.con.Say("quarantine: this box serves nothing, joins no cluster and holds no VIP:\n- %s\nfix the cluster key on the boot server or the kernel command line, then reboot; type `node` for details",
		strings.Join(reasons, "\n- "))
}

// watchXmppdLine sees each line xmppd logs. Before the node first serves, a refused
// cluster key puts the box in quarantine at once: the key will not get better by
// retrying, and a box with the wrong key must never form a cluster of its own.
func (n *node) watchXmppdLine(line string) {
	reason := config.WrongKey(line)
	if reason == "" {
		return
	}
	n.mu.Lock()
	serving := n.ready != ""
	n.mu.Unlock()
	if !serving {
		n.enterQuarantine(reason)
	}
}

// pxeDir holds the kernel and initramfs a node mirrors from its boot server to serve
// network boots itself (RAM: /run is a tmpfs).
const pxeDir = "/run/xedge/pxe"

// startPXE (xedge.pxe=on) makes this node a PXE server for its segment: ProxyDHCP
// beside the segment's DHCP server, router advertisements, and HTTP for the image it
// booted (mirrored from its own boot server, so boxes keep booting when that server
// is gone), handing each box this cluster's key and this node as its seed.
func (n *node) startPXE(ctx context.Context) error {
	c := n.getCfg()
	if c.PXE == "" || c.Maintenance() {
		return nil
	}
	if c.Boot == "" {
		return fmt.Errorf("xedge.pxe=on needs the image to serve: boot this node from an xedge boot server (its xedge.boot= URL)")
	}
	n.mu.Lock()
	lease := n.primary
	n.mu.Unlock()
	go func() {
		if err := n.servePXE(context.Background(), c, lease.Interface, lease.Addr.Addr().String()); err != nil {
			n.log.Error("pxe server", "err", err)
			n.con.Say("pxe: not serving network boots: %v", err)
		}
	}()
	return nil
}

func (n *node) servePXE(ctx context.Context, c config.Config, ifname, addr string) error {
	if err := os.MkdirAll(pxeDir, 0o755); err != nil {
		return err
	}
	base, err := url.Parse(c.Boot)
	if err != nil {
		return err
	}
	// The boot server serves its initramfs (whatever its compression) also as "initrd".
	kernel, initrd := filepath.Join(pxeDir, "vmlinuz"), filepath.Join(pxeDir, "initrd.img")
	for file, name := range map[string]string{kernel: "vmlinuz", initrd: "initrd"} {
		if err := download(ctx, base.JoinPath(name).String(), file); err != nil {
			return fmt.Errorf("mirror the image from %s: %w", c.Boot, err)
		}
	}
	params := map[string]string{"domain": c.Domain, "key": c.ClusterKey, "seeds": addr}
	if c.ConfigURL != "" {
		params["config"] = c.ConfigURL // the site's xmppd configuration, as this node got it
	}
	srv, err := pxe.New(pxe.Config{Interface: ifname, Mode: pxe.ModeProxy, Log: n.log,
		Boot: pxe.Boot{Kernel: kernel, Initrd: initrd, Cmdline: image.Cmdline, Params: params}})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	n.con.Say("pxe: serving network boots on %s (ProxyDHCP) from %s", ifname, srv.URL())
	return nil
}

// download copies url to path (no size limit: kernel and initramfs).
func download(ctx context.Context, url, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
