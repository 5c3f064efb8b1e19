package replicated

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/blockdev"
)

var testKey = []byte("0123456789abcdef-test-cluster-key")

// lossDev is a BlockDevice that can be unplugged and plugged back: while down,
// every operation fails as a lost LUN does.
type lossDev struct {
	base storage.BlockDevice
	down atomic.Bool
}

var errUnplugged = errors.New("test: device unplugged")

func newLossDev(size int64) *lossDev { return &lossDev{base: blockdev.NewMem(size, 512)} }

func (d *lossDev) ReadAt(p []byte, off int64) (int, error) {
	if d.down.Load() {
		return 0, errUnplugged
	}
	return d.base.ReadAt(p, off)
}

func (d *lossDev) WriteAt(p []byte, off int64) (int, error) {
	if d.down.Load() {
		return 0, errUnplugged
	}
	return d.base.WriteAt(p, off)
}

func (d *lossDev) Sync() error {
	if d.down.Load() {
		return errUnplugged
	}
	return d.base.Sync()
}

func (d *lossDev) Size() int64    { return d.base.Size() }
func (d *lossDev) BlockSize() int { return d.base.BlockSize() }

// testNode is one node of an in-process cluster on 127.0.0.x.
type testNode struct {
	name string
	ip   string
	dir  string
	dev  *lossDev
	cfg  Config
	s    *Store
}

var ipCounter atomic.Int32

// takeIP hands out a loopback address per node, as serf's testutil.TakeIP.
func takeIP() string {
	n := ipCounter.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 10+n/250, 2+n%250)
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("REPLICATED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

var logMu sync.Mutex

func (w testWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func fastConfig(t *testing.T, name, ip string, join []string, dev storage.BlockDevice, dir string) Config {
	return Config{
		NodeName:           name,
		ClusterAddr:        ip + ":0",
		Join:               join,
		DataDir:            dir,
		Device:             dev,
		ClusterKey:         testKey,
		Logger:             testLogger(t),
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 300 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		ReportInterval:     50 * time.Millisecond,
		StorageProbe:       20 * time.Millisecond,
	}
}

// cluster starts n nodes with devices; node 0 bootstraps, the others join it.
type cluster struct {
	t     *testing.T
	nodes []*testNode
	// makeDev returns node i's device (default: 8 MiB of RAM).
	makeDev func(i int) storage.BlockDevice
}

func newCluster(t *testing.T, n int, opts ...func(*Config)) *cluster {
	t.Helper()
	return newClusterWith(t, n, nil, opts...)
}

func newClusterWith(t *testing.T, n int, makeDev func(int) storage.BlockDevice, opts ...func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, makeDev: makeDev}
	for i := 0; i < n; i++ {
		c.add(opts...)
	}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) add(opts ...func(*Config)) *testNode {
	c.t.Helper()
	nd := &testNode{name: fmt.Sprintf("n%d", len(c.nodes)+1), ip: takeIP(), dir: c.t.TempDir(), dev: newLossDev(8 << 20)}
	var dev storage.BlockDevice = nd.dev
	if c.makeDev != nil {
		if base := c.makeDev(len(c.nodes)); base != nil {
			nd.dev = &lossDev{base: base}
			dev = nd.dev
		} else {
			nd.dev, dev = nil, nil
		}
	}
	var join []string
	if len(c.nodes) > 0 {
		join = []string{c.nodes[0].s.Addr()}
	}
	nd.cfg = fastConfig(c.t, nd.name, nd.ip, join, dev, nd.dir)
	for _, o := range opts {
		o(&nd.cfg)
	}
	c.start(nd)
	c.nodes = append(c.nodes, nd)
	return nd
}

func (c *cluster) start(nd *testNode) {
	c.t.Helper()
	s, err := New(nd.cfg)
	if err != nil {
		c.t.Fatalf("New %s: %v", nd.name, err)
	}
	if err := s.Start(context.Background()); err != nil {
		c.t.Fatalf("Start %s: %v", nd.name, err)
	}
	nd.s = s
}

func (c *cluster) stop() {
	for _, nd := range c.nodes {
		if nd.s != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := nd.s.Stop(ctx); err != nil {
				c.t.Errorf("stop %s: %v", nd.name, err)
				if f, err := os.Create(filepath.Join(os.TempDir(), "replicated-stop-"+nd.name+".txt")); err == nil {
					_ = pprof.Lookup("goroutine").WriteTo(f, 2)
					f.Close()
				}
			}
			cancel()
		}
	}
}

// waitFor polls cond until it holds or the deadline passes. Deadlines are
// tripled: the machine running these tests is shared and often loaded.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	d *= 3
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func (c *cluster) leader() *testNode {
	for _, nd := range c.nodes {
		if nd.s != nil && nd.s.raft != nil && nd.s.raft.State() == raft.Leader {
			return nd
		}
	}
	return nil
}

// suffrage returns node name -> "voter"/"nonvoter" from the leader's config.
func (c *cluster) suffrage() map[string]string {
	out := map[string]string{}
	l := c.leader()
	if l == nil {
		return out
	}
	f := l.s.raft.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	for _, srv := range f.Configuration().Servers {
		v := "nonvoter"
		if srv.Suffrage == raft.Voter {
			v = "voter"
		}
		out[nameOf(srv.ID)] = v
	}
	return out
}

func (c *cluster) voters() int {
	n := 0
	for _, v := range c.suffrage() {
		if v == "voter" {
			n++
		}
	}
	return n
}

func (c *cluster) waitVoters(want int, d time.Duration) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%d voters among %d nodes", want, len(c.nodes)), d, func() bool {
		return c.voters() == want && len(c.suffrage()) == len(c.nodes)
	})
}

func mustApply(t *testing.T, s *Store, ops ...storage.Op) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // a bound only: the host is shared and often loaded
	defer cancel()
	if err := s.Apply(ctx, ops...); err != nil {
		t.Fatalf("apply on %s: %v", s.cfg.NodeName, err)
	}
}

func mustDeclare(t *testing.T, s *Store, name string, c storage.CopyType) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // a bound only: the host is shared and often loaded
	defer cancel()
	if err := s.Declare(ctx, storage.TableSpec{Name: name, Copy: c}); err != nil {
		t.Fatalf("declare on %s: %v", s.cfg.NodeName, err)
	}
}

func get(t *testing.T, s *Store, table, key string) (string, bool) {
	t.Helper()
	tb, err := s.Durable(table)
	if err != nil {
		return "", false
	}
	v, ok, err := tb.Get(key)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return string(v), ok
}

func markerExists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, markerName))
	return err == nil
}

// waitLeader returns the current leader, waiting for an election if needed.
func (c *cluster) waitLeader() *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, "a leader", 5*time.Second, func() bool { l = c.leader(); return l != nil })
	return l
}
