package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xedge/discovery/dns/bindtest"
	"xedge/internal/freeport"
	"xedge/xmppd/admin"
)

// The end-to-end series: three real xmppd processes on 127.0.0.7x with gossip
// membership, each serving the zone (dns-listen), the raft leader keeping BIND
// current (dns-update). Each round SIGKILLs one node (the leader on odd rounds:
// a new leader must be elected before BIND changes), times gossip's failure
// declaration, the survivors' embedded answers and BIND's answer, then restarts
// the node and times its return in DNS.

type xnode struct {
	name, ip, cluster, dns, data string
	args                         []string
	cmd                          *exec.Cmd
	log                          *bindtest.Buffer
	exited                       chan struct{}
}

func (n *xnode) start(bin string) error {
	n.log = &bindtest.Buffer{}
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		return err
	}
	n.exited = make(chan struct{})
	go func(c *exec.Cmd, ch chan struct{}) { c.Wait(); close(ch) }(n.cmd, n.exited)
	return nil
}

func (n *xnode) kill() {
	if n.cmd == nil {
		return
	}
	syscall.Kill(n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.exited
	n.cmd = nil
}

func (n *xnode) call(cmd string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := admin.Call(ctx, filepath.Join(n.data, "admin.sock"), admin.Request{Cmd: cmd})
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s: %s", cmd, r.Error)
	}
	return json.Unmarshal(r.Result, out)
}

func (n *xnode) leader() string {
	var st struct {
		Leader string `json:"leader"`
	}
	n.call("storage", &st)
	return st.Leader
}

func (n *xnode) gossipState(of string) string {
	var rows []struct {
		Node  string `json:"node"`
		State string `json:"state"`
	}
	n.call("gossip", &rows)
	for _, r := range rows {
		if r.Node == of {
			return r.State
		}
	}
	return "gone"
}

type clusterResult struct {
	Detect, Served, Pushed, DNSServed, DNSPushed, Rejoin, RejoinBIND *series
	Rounds                                                           []map[string]any
}

func runCluster(rounds int, bindAddr, keyFile, dir string) (*clusterResult, error) {
	bin := filepath.Join(dir, "xmppd")
	if out, err := exec.Command("go", "build", "-o", bin, "./xmppd/cmd/xmppd").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build xmppd (run from the repository root): %v\n%s", err, out)
	}
	kb := make([]byte, 32)
	rand.Read(kb)
	keyPath := filepath.Join(dir, "cluster.key")
	os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(kb)+"\n"), 0o600)
	names := []string{"dns-a", "dns-b", "dns-c"}
	ips := []string{"127.0.0.71", "127.0.0.72", "127.0.0.73"}
	var nodes []*xnode
	var seeds []string
	for i, name := range names {
		cp, err := freeport.Pair(ips[i])
		if err != nil {
			return nil, err
		}
		dp, err := freeport.Pair(ips[i])
		if err != nil {
			return nil, err
		}
		n := &xnode{name: name, ip: ips[i], cluster: net.JoinHostPort(ips[i], strconv.Itoa(cp)),
			dns: net.JoinHostPort(ips[i], strconv.Itoa(dp)), data: filepath.Join(dir, name)}
		seeds = append(seeds, net.JoinHostPort(ips[i], strconv.Itoa(cp+1)))
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		c2s, err := freeport.Pair(n.ip)
		if err != nil {
			return nil, err
		}
		n.args = []string{"--data", n.data, "--node-name", n.name, "--domain", "example.org", "--log-level", "warn",
			"--c2s", net.JoinHostPort(n.ip, strconv.Itoa(c2s)), "--c2s-tls", "",
			"--cluster-addr", n.cluster, "--cluster-key-file", keyPath,
			"--storage", fmt.Sprintf("file:%s/%s.img?size=%d", dir, n.name, 64<<20),
			"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms", "--raft-lease-timeout", "250ms",
			"--discover", "serf", "--seeds", strings.Join(seeds, ","), "--discover-window", "1s",
			"--dns-listen", n.dns, "--dns-update", bindAddr, "--dns-tsig-key-file", keyFile}
		if err := n.start(bin); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, n := range nodes {
			n.kill()
		}
	}()
	all := []string{"dns-a.node.example.org.", "dns-b.node.example.org.", "dns-c.node.example.org."}
	waitAll := func(want []string, within time.Duration, except int) (time.Duration, time.Duration, bool) {
		start := time.Now()
		var served, pushed time.Duration
		for time.Since(start) < within && (served == 0 || pushed == 0) {
			if served == 0 {
				ok := true
				for i, n := range nodes {
					if i == except {
						continue
					}
					_, good := waitFor(n.dns, "udp", want, time.Millisecond)
					ok = ok && good
				}
				if ok {
					served = time.Since(start)
				}
			}
			if pushed == 0 {
				if _, good := waitFor(bindAddr, "tcp", want, time.Millisecond); good {
					pushed = time.Since(start)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		return served, pushed, served > 0 && pushed > 0
	}
	if _, _, ok := waitAll(all, 60*time.Second, -1); !ok {
		return nil, fmt.Errorf("the cluster never published its 3 nodes in DNS within 60 s; dns-a log:\n%s", nodes[0].log.String())
	}
	res := &clusterResult{Detect: &series{Name: "kill -> gossip declares the node failed"},
		Served:     &series{Name: "kill -> survivors' embedded answers drop it", TargetMax: 3000},
		Pushed:     &series{Name: "kill -> BIND drops it (new leader on leader kills)", TargetMax: 3000},
		DNSServed:  &series{Name: "gossip declaration -> survivors' embedded answers", TargetMax: 2000},
		DNSPushed:  &series{Name: "gossip declaration -> BIND answer", TargetMax: 2000},
		Rejoin:     &series{Name: "restart -> every embedded server lists it (its own included, so its start)"},
		RejoinBIND: &series{Name: "restart -> BIND lists it (admitted once its client port answers)"}}
	for r := range rounds {
		leader := nodes[0].leader()
		if leader == "" {
			leader = nodes[1].leader()
		}
		victim := -1
		for i, n := range nodes {
			if (r%2 == 0) == (n.name == leader) && victim < 0 { // even rounds: the leader; odd: a follower
				victim = i
			}
		}
		if victim < 0 {
			return nil, fmt.Errorf("round %d: no leader known", r)
		}
		var want []string
		for i, t := range all {
			if i != victim {
				want = append(want, t)
			}
		}
		watcher := nodes[(victim+1)%3]
		kill := time.Now()
		nodes[victim].kill()
		var detect time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			for time.Since(kill) < 20*time.Second {
				if s := watcher.gossipState(nodes[victim].name); s == "failed" || s == "left" || s == "gone" {
					detect = time.Since(kill)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		served, pushed, ok := waitAll(want, 20*time.Second, victim)
		<-done
		record(res.Detect, detect, detect > 0)
		record(res.Served, served, ok)
		record(res.Pushed, pushed, ok)
		record(res.DNSServed, max(served-detect, 0), ok && detect > 0)
		record(res.DNSPushed, max(pushed-detect, 0), ok && detect > 0)
		restart := time.Now()
		if err := nodes[victim].start(bin); err != nil {
			return nil, err
		}
		s2, p2, ok2 := waitAll(all, 60*time.Second, -1)
		record(res.Rejoin, s2, ok2)
		record(res.RejoinBIND, p2, ok2)
		res.Rounds = append(res.Rounds, map[string]any{"killed": nodes[victim].name, "was_leader": nodes[victim].name == leader,
			"detect_ms": ms(detect), "served_ms": ms(served), "bind_ms": ms(pushed), "restart_served_ms": ms(s2), "restart_bind_ms": ms(p2),
			"restart_total_ms": ms(time.Since(restart))})
		fmt.Printf("round %d: killed %s (leader %v): detect %v, served %v, BIND %v; back in DNS %v after restart\n", r+1, nodes[victim].name,
			nodes[victim].name == leader, detect.Round(time.Millisecond), served.Round(time.Millisecond), pushed.Round(time.Millisecond), s2.Round(time.Millisecond))
		if !ok || !ok2 {
			return res, fmt.Errorf("round %d did not converge; %s log:\n%s", r+1, watcher.name, watcher.log.String())
		}
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
