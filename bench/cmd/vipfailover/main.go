// Command vipfailover runs the VIP failover benchmark (bench/vipfailover) and writes
// bench/results/vip-failover-<time>.{json,md} (with -resume also a .png: messages
// acknowledged against delivered per failover). Needs root.
//
//	go run ./bench/cmd/vipfailover [-kills 20] [-out bench/results] [-hang | -cut 8s] [-resume] [-xmppd-flags '...']
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"xedge/bench/vipfailover"
)

func main() {
	kills := flag.Int("kills", 20, "failovers to measure")
	out := flag.String("out", "bench/results", "directory for the results")
	keep := flag.Bool("keep", false, "keep the work directory (node logs)")
	xmppd := flag.String("xmppd", "", "xmppd binary (default: built from this checkout)")
	xmppctl := flag.String("xmppctl", "", "xmppctl binary (default: built from this checkout)")
	hang := flag.Bool("hang", false, "freeze the holder (SIGSTOP) instead of killing it")
	resume := flag.Bool("resume", false, "also measure XEP-0198 resumption through the VIP under messages from a surviving node")
	cut := flag.Duration("cut", 0, "instead of killing the holder, cut its cluster traffic (store and bus, not gossip) for this long: a false node loss")
	extra := flag.String("xmppd-flags", "", "extra xmppd flags for every node, space-separated (recorded in the results)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "vipfailover-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	res, err := vipfailover.Run(ctx, vipfailover.Options{Kills: *kills, Dir: dir, Log: os.Stderr, Xmppd: *xmppd, Xmppct: *xmppctl, Hang: *hang, Resume: *resume, Cut: *cut, Extra: strings.Fields(*extra)})
	if res != nil {
		if c, e := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); e == nil {
			res.Commit = strings.TrimSpace(string(c))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vipfailover: %v (work directory %s)\n", err, dir)
		if !*keep {
			os.RemoveAll(dir)
		}
		os.Exit(1)
	}
	stamp := res.Started.Format("2006-01-02T15-04Z")
	name := "vip-failover-"
	if *hang {
		name = "vip-hang-"
	}
	if *cut > 0 {
		name = "vip-falseloss-"
	}
	if *resume {
		name += "resume-"
	}
	base := filepath.Join(*out, name+stamp)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(base+".md", []byte(res.Markdown()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *resume {
		// The figure: per failover, messages acknowledged by the sender's
		// server against those delivered (to the resumed session or offline).
		plot := exec.Command("/usr/bin/python3", "-c", plotPy, base+".json", base+".png")
		plot.Stdout, plot.Stderr = os.Stderr, os.Stderr
		if err := plot.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "vipfailover: no figure (python3-matplotlib?): %v\n", err)
		}
		fmt.Printf("resumed after a kill: p50 %.3f s, max %.3f s\n", res.ResumedP50, res.ResumedMax)
		var acked, lost int
		for _, k := range res.Kills {
			acked += k.MsgAcked
			lost += k.MsgLost
		}
		fmt.Printf("messages: %d acknowledged, %d lost over %d failovers\n", acked, lost, len(res.Kills))
	}
	fmt.Printf("served again after a kill: p50 %.3f s, max %.3f s over %d kills (client connection failed: p50 %.3f s, max %.3f s)\nwrote %s.{json,md}\n",
		res.ServedP50, res.ServedMax, len(res.Kills), res.DetectP50, res.DetectMax, base)
}

const plotPy = `
import json, sys
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
ks = r['kills']
x = list(range(1, len(ks) + 1))
acked = [k['msgs_acked'] for k in ks]
recv = [k['msgs_received'] for k in ks]
off = [k['msgs_offline'] for k in ks]
lost = [k['msgs_lost'] for k in ks]
fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(ks) + 2), 4))
w = 0.4
ax.bar([i - w / 2 for i in x], acked, w, label='acknowledged to the sender', color='#4c72b0')
ax.bar([i + w / 2 for i in x], recv, w, label='delivered to the resumed session', color='#55a868')
ax.bar([i + w / 2 for i in x], off, w, bottom=recv, label='delivered offline', color='#c4ad66')
ax.bar([i + w / 2 for i in x], lost, w, bottom=[a + b for a, b in zip(recv, off)], label='lost', color='#c44e52')
ax.set_xticks(x)
ax.set_xticklabels(['%d%s' % (i, '\nfailed' if k.get('error') else '') for i, k in zip(x, ks)])
ax.set_xlabel('failover (%s)' % r['mode'])
ax.set_ylabel('messages')
ax.set_title('%d acknowledged, %d lost over %d failovers (%s)' % (sum(acked), sum(lost), len(ks), r.get('commit', '')))
ax.set_ylim(0, max(acked + [1]) * 1.4)
ax.legend(loc='upper center', ncol=2, fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
`
