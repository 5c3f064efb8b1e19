// Command vipfailover runs the VIP failover benchmark (bench/vipfailover) and writes
// bench/results/vip-failover-<time>.{json,md}. Needs root.
//
//	go run ./bench/cmd/vipfailover [-kills 20] [-out bench/results] [-hang | -cut 8s] [-resume]
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
	res, err := vipfailover.Run(ctx, vipfailover.Options{Kills: *kills, Dir: dir, Log: os.Stderr, Xmppd: *xmppd, Xmppct: *xmppctl, Hang: *hang, Resume: *resume, Cut: *cut})
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
		fmt.Printf("resumed after a kill: p50 %.3f s, max %.3f s\n", res.ResumedP50, res.ResumedMax)
	}
	fmt.Printf("served again after a kill: p50 %.3f s, max %.3f s over %d kills (client connection failed: p50 %.3f s, max %.3f s)\nwrote %s.{json,md}\n",
		res.ServedP50, res.ServedMax, len(res.Kills), res.DetectP50, res.DetectMax, base)
}
