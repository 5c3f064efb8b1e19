package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"xedge/storage/replicated"
	"xedge/xmppd/cluster"
)

// `xmppctl cluster join ADDR [--force]`, like ejabberd's join_cluster: a
// running node that is alone in its cluster (it bootstrapped by itself) joins
// the cluster at ADDR. Its own tables are discarded (with --force when it has
// data), its raft state is wiped and it joins ADDR under a fresh raft ID. The
// running store cannot be swapped under the features that hold it (bus,
// router, resumption), so the process restarts itself in place (same PID,
// same arguments) with the join seed persisted in <data>/cluster-join; a
// supervisor that restarts it instead gets the same result from that file.
// Nothing changes unless ADDR answers with this cluster key.

// JoinFile holds the seeds a node joins at its next start (cluster join).
const JoinFile = "cluster-join"

func (f *busFeature) join(ctx context.Context, args []string) (any, error) {
	var addr string
	force := false
	for _, a := range args {
		switch {
		case a == "--force" || a == "-force" || a == "--yes":
			force = true
		case addr == "" && !strings.HasPrefix(a, "-"):
			addr = a
		default:
			return nil, errors.New("usage: cluster join ADDR [--force]")
		}
	}
	if addr == "" {
		return nil, errors.New("usage: cluster join ADDR [--force]")
	}
	f.mu.Lock()
	rep := f.rep
	f.mu.Unlock()
	if rep == nil {
		return nil, errors.New("join: the replicated store is not running")
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	peer, err := cluster.Probe(pctx, rep, addr, f.s.cfg.Node, rep.Incarnation())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("join %s: nothing changed: %w", addr, err)
	}
	if peer == f.s.cfg.Node {
		return nil, fmt.Errorf("join %s: that is this node (%s)", addr, peer)
	}
	var others []string
	for _, m := range rep.Members() {
		if m.Name != "" && m.Name != f.s.cfg.Node {
			others = append(others, m.Name)
		}
	}
	if len(others) > 0 {
		sort.Strings(others)
		for _, o := range others {
			if o == peer {
				return fmt.Sprintf("already a member of the cluster of %s", peer), nil
			}
		}
		return nil, fmt.Errorf("join %s: this node is a member of a cluster with %s: run `xmppctl cluster leave` first, then start it with --join %s", addr, strings.Join(others, ", "), addr)
	}
	var data []string
	for _, t := range f.s.Store.Tables() {
		if t.Kind == "durable" && t.Keys > 0 {
			data = append(data, fmt.Sprintf("%s (%d)", t.Name, t.Keys))
		}
	}
	if len(data) > 0 && !force {
		return nil, fmt.Errorf("join %s: nothing changed: joining discards this node's tables, which hold data: %s; "+
			"run `xmppctl cluster join %s --force` to discard them", addr, strings.Join(data, ", "), addr)
	}
	if err := os.WriteFile(filepath.Join(f.s.cfg.Data, JoinFile), []byte(addr+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("join %s: nothing changed: %w", addr, err)
	}
	if err := replicated.MarkRejoin(filepath.Join(f.s.cfg.Data, "raft"), "xmppctl cluster join "+addr+": discard this node's raft state and join under a fresh ID"); err != nil {
		_ = os.Remove(filepath.Join(f.s.cfg.Data, JoinFile))
		return nil, fmt.Errorf("join %s: nothing changed: %w", addr, err)
	}
	f.s.log.Warn("joining another cluster on request (xmppctl cluster join): this node's tables are discarded; restarting",
		"component", "bus", "addr", addr, "peer", peer, "discarded", data)
	go func() {
		time.Sleep(300 * time.Millisecond) // the answer reaches xmppctl first
		sctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.StopTimeout)
		err := f.s.Stop(sctx)
		cancel()
		if err != nil {
			f.s.log.Warn("stop before rejoining", "component", "bus", "err", err)
		}
		if err := restartSelf(); err != nil {
			// A supervisor restarting the process joins from the persisted seed.
			f.s.log.Error("cannot restart in place: stopping; the next start joins "+addr, "component", "bus", "err", err)
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}()
	msg := fmt.Sprintf("joining the cluster of %s at %s: this node's raft state is wiped, it restarts and joins under a fresh raft ID", peer, addr)
	if len(data) > 0 {
		msg += "; discarded tables: " + strings.Join(data, ", ")
	}
	return msg, nil
}

// persistedJoin returns the seeds `cluster join` left in the data directory.
func persistedJoin(data string) string {
	b, err := os.ReadFile(filepath.Join(data, JoinFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
