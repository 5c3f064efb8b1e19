//go:build vmtest

package vmtest

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"xedge/build/lab"
)

// pxePhases splits one PXE-booted box's power-on → serving time. Host clock, from
// the boot server's events (lab `boxes`): power-on → DHCP request (SeaBIOS, iPXE),
// → kernel sent (boot script, bzImage download), initramfs download (request →
// last byte sent). Guest clocks (only differences within the guest are used, so
// its RTC offset does not matter): the kernel's time of `Run /init` (dmesg: kernel
// start → /init, and the initramfs unpack in it), init's boot phases and xmppd's
// start, bootstrap, first election, cluster join and ready line (init's log ring).
// What is left between the initramfs's last byte and the kernel's clock starting
// is iPXE handing over and the bzImage decompressing itself.
func pxePhases(ctx context.Context, sock string, n lab.NodeState, boxes string) string {
	dm, _ := lab.Run(ctx, sock, "dmesg 3000")
	lg, _ := lab.Run(ctx, sock, "log 600")
	ksec := func(pat string) float64 {
		if m := regexp.MustCompile(`\[\s*([0-9.]+)\] ` + pat).FindStringSubmatch(dm); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
		return -1
	}
	kernelInit := ksec(`Run /init as init process`)
	unpack := -1.0
	if a, b := ksec(`(?:Trying to unpack rootfs image as initramfs|Unpacking initramfs)`), ksec(`Freeing initrd memory`); a >= 0 && b >= a {
		unpack = b - a
	}
	at := func(pat string) time.Time {
		m := regexp.MustCompile(`time=(\S+) [^\n]*` + pat).FindStringSubmatch(lg)
		if m == nil {
			return time.Time{}
		}
		t, _ := time.Parse(time.RFC3339Nano, m[1])
		return t
	}
	took := func(phase string) string {
		m := regexp.MustCompile(`phase=` + phase + ` took=(\S+)`).FindStringSubmatch(lg)
		if m == nil {
			return "?"
		}
		d, _ := time.ParseDuration(m[1])
		return fmt.Sprintf("%.2f", d.Seconds())
	}
	sinceBoot := 0.0
	if m := regexp.MustCompile(`msg="xmppd ready" pid=\d+ since_boot=(\S+)`).FindStringSubmatch(lg); m != nil {
		d, _ := time.ParseDuration(m[1])
		sinceBoot = d.Seconds()
	}
	sec := func(a, b time.Time) string {
		if a.IsZero() || b.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.1f", b.Sub(a).Seconds())
	}
	// Host clock: init's first instruction is sinceBoot before the ready line
	// (the lab saw it within 0.1 s); the kernel's clock started kernelInit before.
	var initHost, kernelHost time.Time
	if sinceBoot > 0 && !n.Ready.IsZero() {
		initHost = n.Ready.Add(-time.Duration(sinceBoot * float64(time.Second)))
		if kernelInit >= 0 {
			kernelHost = initHost.Add(-time.Duration(kernelInit * float64(time.Second)))
		}
	}
	ev := func(k string) time.Time { return boxEvent(boxes, n, k) }
	svc := at(`msg="service started" service=xmppd`)
	first := at(`msg="memory policy"`)
	boot, won := at(`msg="bootstrapped a new cluster"`), at(`msg="election won"`)
	joined := at(`msg="joined the cluster"`)
	ready := at(`msg="xmppd ready"`)
	mounts := at(`phase=mounts`)
	raft := ""
	if !boot.IsZero() {
		raft = fmt.Sprintf("; bootstrapped at +%s s, first election won at +%s s", sec(svc, boot), sec(svc, won))
	}
	xm := ""
	if !first.IsZero() {
		xm = fmt.Sprintf("; xmppd's first log line at +%s s", sec(svc, first))
	}
	return fmt.Sprintf("%s: power-on → DHCP request %s s; → boot script and kernel sent %s s (kernel %s s); initramfs download %s s; "+
		"→ kernel's clock starts %s s (iPXE hands over, the bzImage decompresses itself); kernel → /init %s s (initramfs unpack %s s); "+
		"init → xmppd started %s s (modules %s, DHCP %s, config %s); xmppd → cluster joined %s s (%s); → serving %s s",
		n.Name, sec(n.Started, ev("dhcp")), sec(ev("dhcp"), ev("kernel-sent")), sec(ev("kernel"), ev("kernel-sent")),
		sec(ev("initrd"), ev("initrd-sent")), sec(ev("initrd-sent"), kernelHost), fsec(kernelInit), fsec(unpack),
		sec(mounts, svc), took("modules"), took("network"), took("config"),
		sec(svc, joined), strings.TrimPrefix(raft+xm, "; "), sec(joined, ready))
}

func fsec(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", v)
}

// checkVIPAndDNS asks the lab's VIP for an XMPP stream on 5222 and the DNS server
// on it for the client SRV records, from inside the lab's namespace (the host side
// of the bridge). It returns the SRV answer.
func checkVIPAndDNS(ctx context.Context, netns, vip, domain string, nodes []string) (string, error) {
	var lastErr error
	for i := 0; i < 60; i++ { // ≤ ~60 s: a VIP is taken a few seconds after the first node serves
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, "ip", "netns", "exec", netns, "/usr/bin/python3", "-c", `
import socket,sys
s=socket.create_connection((sys.argv[1],5222),3)
s.sendall(("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % sys.argv[2]).encode())
s.settimeout(3)
b=b''
while b'</stream:features>' not in b:
    d=s.recv(4096)
    if not d: break
    b+=d
print(b.decode())`, vip, domain).CombinedOutput()
		cancel()
		if err == nil && strings.Contains(string(out), "urn:ietf:params:xml:ns:xmpp-tls") {
			lastErr = nil
			break
		}
		lastErr = fmt.Errorf("VIP %s:5222: %v: %s", vip, err, out)
		time.Sleep(time.Second)
	}
	if lastErr != nil {
		return "", lastErr
	}
	var srv string
	for i := 0; i < 60; i++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, "ip", "netns", "exec", netns, "dig", "+short", "+time=2", "+tries=1",
			"@"+vip, "_xmpp-client._tcp."+domain, "SRV").CombinedOutput()
		cancel()
		srv = strings.TrimSpace(string(out))
		missing := []string{}
		for _, n := range nodes {
			if !strings.Contains(srv, " 5222 "+n+".node."+domain+".") {
				missing = append(missing, n)
			}
		}
		if !strings.Contains(srv, " 5222 "+strings.ReplaceAll(vip, ".", "-")+".vip."+domain+".") {
			missing = append(missing, "the VIP")
		}
		if err == nil && len(missing) == 0 {
			return srv, nil
		}
		lastErr = fmt.Errorf("dig SRV at %s: %v; missing %v in:\n%s", vip, err, missing, srv)
		time.Sleep(time.Second)
	}
	return srv, lastErr
}
