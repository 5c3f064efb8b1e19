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

// guestPhases splits one PXE-booted box's power-on → serving time with the guest's
// own clocks: the kernel's time of `Run /init` (dmesg), init's boot phases and
// xmppd's start, cluster join and ready line (init's log ring, guest wall clock;
// only differences within the guest are used, so its RTC offset does not matter).
// initrdAt is when the boot server saw the initramfs request (host clock).
func guestPhases(ctx context.Context, sock string, n lab.NodeState, initrdAt time.Time) string {
	dm, _ := lab.Run(ctx, sock, "dmesg 2000")
	lg, _ := lab.Run(ctx, sock, "log 400")
	kernelInit := -1.0
	if m := regexp.MustCompile(`\[\s*([0-9.]+)\] Run /init as init process`).FindStringSubmatch(dm); m != nil {
		kernelInit, _ = strconv.ParseFloat(m[1], 64)
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
	total := n.BootSeconds()
	preInit := total - sinceBoot // power-on → init's first instruction (host wall time)
	initStart := n.Started.Add(time.Duration(preInit * float64(time.Second)))
	sec := func(a, b time.Time) string {
		if a.IsZero() || b.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.1f", b.Sub(a).Seconds())
	}
	mounts := at(`phase=mounts`)
	svc := at(`msg="service started" service=xmppd`)
	first := at(`msg="memory policy"`)
	joined := at(`msg="joined the cluster"`)
	ready := at(`msg="xmppd ready"`)
	fetchKernel := "?"
	if !initrdAt.IsZero() && sinceBoot > 0 {
		fetchKernel = fmt.Sprintf("%.1f", initStart.Sub(initrdAt).Seconds())
	}
	return fmt.Sprintf("%s: initramfs request → init %s s (download, bzImage decompression, kernel boot; of it kernel start → /init %.1f s), "+
		"init → xmppd started %s s (modules %s, DHCP %s, config %s), xmppd → cluster joined %s s, → serving %s s",
		n.Name, fetchKernel, kernelInit, sec(mounts, svc), took("modules"), took("network"), took("config"),
		sec(svc, joined), sec(joined, ready)) + func() string {
		if first.IsZero() {
			return ""
		}
		return fmt.Sprintf(" (xmppd's first log line %s s after its start)", sec(svc, first))
	}()
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
