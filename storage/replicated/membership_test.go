package replicated

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/blocklog"
)

// countingDev records every call: New must make none.
type countingDev struct {
	storage.BlockDevice
	calls atomic.Int32
}

func (d *countingDev) ReadAt(p []byte, off int64) (int, error) {
	d.calls.Add(1)
	return d.BlockDevice.ReadAt(p, off)
}

func (d *countingDev) WriteAt(p []byte, off int64) (int, error) {
	d.calls.Add(1)
	return d.BlockDevice.WriteAt(p, off)
}

func (d *countingDev) Sync() error { d.calls.Add(1); return d.BlockDevice.Sync() }

// New does no I/O: no device access, no data directory, no listener, so it
// succeeds on an address in use, an unusable data directory and a device
// holding foreign data; Start then fails with an error naming each.
func TestNewDoesNoIO(t *testing.T) {
	busy, err := net.Listen("tcp", takeIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := blockdev.NewMem(8<<20, 512)
	if _, err := foreign.WriteAt([]byte(strings.Repeat("ext4", 128)), 0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		set  func(*Config, *countingDev)
		want string
		is   error
	}{
		{"cluster address in use", func(c *Config, _ *countingDev) { c.ClusterAddr = busy.Addr().String() }, "listen on cluster address", nil},
		{"data dir unusable", func(c *Config, _ *countingDev) { c.DataDir = filepath.Join(blocker, "raft") }, "data dir", nil},
		{"foreign device", func(c *Config, d *countingDev) { d.BlockDevice = foreign }, "not an xedge layout", blocklog.ErrForeign},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev := &countingDev{BlockDevice: blockdev.NewMem(8<<20, 512)}
			cfg := fastConfig(t, "noio", takeIP(), nil, dev, filepath.Join(t.TempDir(), "raft"))
			tc.set(&cfg, dev)
			s, err := New(cfg)
			if err != nil {
				t.Fatalf("New did I/O or failed: %v", err)
			}
			if n := dev.calls.Load(); n != 0 {
				t.Fatalf("New touched the device %d times", n)
			}
			defer func() {
				if tc.name == "cluster address in use" && dev.calls.Load() != 0 {
					t.Errorf("a start that could not listen touched the device")
				}
			}()
			if _, err := os.Stat(cfg.DataDir); err == nil {
				t.Fatal("New created the data directory")
			}
			if tc.name != "cluster address in use" {
				if l, err := net.Listen("tcp", cfg.ClusterAddr); err == nil {
					l.Close() // the address was free after New: nothing listened
				} else {
					t.Fatalf("New listened: %v", err)
				}
			}
			err = s.Start(context.Background())
			defer s.Stop(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("Start: %v, want an error with %q", err, tc.want)
			}
			if s.Status().Detail != "not started" {
				t.Fatalf("status after a failed start: %+v", s.Status())
			}
		})
	}
}

// A failed join is a *JoinError naming the address and the kind of failure:
// a wrong cluster key, a seed nobody listens on, a seed that cannot add the
// node (it has no leader itself).
func TestJoinErrorTyped(t *testing.T) {
	c := newCluster(t, 1)
	c.waitVoters(1, 5*time.Second)
	seed := c.nodes[0].s.Addr()

	dead, err := net.Listen("tcp", takeIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	// A started node that has no leader (its own seed is dead) answers reports
	// with an error: it is reached and authenticated, but refuses.
	lonely, err := New(fastConfig(t, "lonely", takeIP(), []string{deadAddr}, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := lonely.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer lonely.Stop(context.Background())

	cases := []struct {
		name string
		key  []byte
		seed string
		is   error
	}{
		{"wrong key", []byte("another key entirely, 32 bytes!!"), seed, ErrWrongKey},
		{"unreachable", testKey, deadAddr, ErrUnreachable},
		{"refused", testKey, lonely.Addr(), ErrRefused},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fastConfig(t, "joiner-"+strings.ReplaceAll(tc.name, " ", "-"), takeIP(), []string{tc.seed}, nil, "")
			cfg.ClusterKey = tc.key
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop(context.Background())
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			err = s.WaitJoined(ctx)
			var je *JoinError
			if !errors.As(err, &je) {
				t.Fatalf("WaitJoined: %T %v, want *JoinError", err, err)
			}
			if je.Addr != tc.seed || !errors.Is(err, tc.is) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("WaitJoined: addr %q cause %v; want %s and %v", je.Addr, je.Cause, tc.seed, tc.is)
			}
			for _, other := range []error{ErrWrongKey, ErrUnreachable, ErrRefused} {
				if other != tc.is && errors.Is(err, other) {
					t.Fatalf("%v is also %v", err, other)
				}
			}
			t.Logf("%v", err)
		})
	}
}

// The marker rule. A node whose state is to be discarded (marker in its data
// directory) and that has no Join seeds refuses to start — it would bootstrap
// a second cluster — and leaves its device alone. A device left half
// re-persisted (the node crashed while re-persisting, whether or not the data
// directory survived) is wiped and the node rejoins under a fresh raft ID,
// or refuses to start without Join seeds.
func TestMarkerRules(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	mustApply(t, c.nodes[0].s, storage.Put("t", "k", []byte("v")))
	nd := c.nodes[2]
	waitFor(t, "row on n2", 5*time.Second, func() bool { _, ok := get(t, nd.s, "t", "k"); return ok })
	oldID := nd.s.ID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nd.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	nd.s = nil

	// 1. Marker, no Join: refused, device untouched.
	if err := os.WriteFile(filepath.Join(nd.dir, markerName), []byte("test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noJoin := nd.cfg
	noJoin.Join = nil
	s, err := New(noJoin)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrStateDiscarded) {
		t.Fatalf("marker without Join: %v", err)
	}
	_ = s.Stop(ctx)
	if bl, err := blocklog.Open(nd.dev, blocklog.Options{Logger: quietLog()}); err != nil || bl.Recovery().Wiped {
		t.Fatalf("device after a refused start: %v", err)
	} else if id, err := bl.Get([]byte(keyNodeID)); err != nil || string(id) != oldID {
		t.Fatalf("device lost its state on a refused start: %q %v", id, err)
	}
	os.Remove(filepath.Join(nd.dir, markerName))

	// 2. A half re-persisted device (the data directory lost its marker, as
	// on tmpfs after a power cycle): make one by failing a re-persist midway.
	half := &failAfter{lossDev: nd.dev, left: 1 << 30}
	bl, err := blocklog.Open(half, blocklog.Options{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	nd.dev.down.Store(true)
	last, _ := bl.LastIndex()
	_ = bl.StoreLogs([]*raft.Log{{Index: last + 1, Term: 99, Type: raft.LogNoop}})
	nd.dev.down.Store(false)
	half.left = 2
	if err := bl.Repersist(); err == nil {
		t.Fatal("the failing re-persist succeeded")
	}
	if r, err := blocklog.Open(nd.dev, blocklog.Options{Logger: quietLog()}); err != nil || !r.Recovery().Partial {
		t.Fatalf("no partial layout: %v", err)
	}
	if s, err = New(noJoin); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrStateDiscarded) {
		t.Fatalf("partial layout without Join: %v", err)
	}
	_ = s.Stop(ctx)
	c.start(nd)
	if nd.s.ID() == oldID {
		t.Fatalf("restarted from a partial layout under its old raft ID %s", oldID)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := nd.s.WaitJoined(wctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "row resynced after the wipe", 5*time.Second, func() bool { v, _ := get(t, nd.s, "t", "k"); return v == "v" })
	if g := nd.s.Status().Generation; g < 3 {
		t.Fatalf("generation %d after a wipe of generation 2", g)
	}
}

// failAfter lets a number of writes through, then fails every write and sync.
type failAfter struct {
	*lossDev
	left int
}

func (f *failAfter) WriteAt(p []byte, off int64) (int, error) {
	if f.left <= 0 {
		return 0, errUnplugged
	}
	f.left--
	return f.lossDev.WriteAt(p, off)
}

func (f *failAfter) Sync() error {
	if f.left <= 0 {
		return errUnplugged
	}
	return f.lossDev.Sync()
}

// The marker lost with a RAM-backed data directory (the appliance after a
// power cycle): a follower that ran RAM-only restarts from its stale device
// under its old raft ID. The leader, which saw that ID report "ram-only" from
// the previous process, removes and refuses it; the node marks itself, and its
// next start wipes and rejoins under a fresh ID with the current data.
func TestStaleRestartWithoutMarkerIsRefused(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	l := c.waitLeader()
	var f *testNode
	for _, nd := range c.nodes {
		if nd != l {
			f = nd
		}
	}
	oldID := f.s.ID()
	mustApply(t, l.s, storage.Put("t", "before", []byte("0")))
	waitFor(t, "row on the follower's device", 5*time.Second, func() bool { _, ok := get(t, f.s, "t", "before"); return ok })
	f.dev.down.Store(true)
	mustApply(t, l.s, storage.Put("t", "a", []byte("1")))
	waitFor(t, "follower reported RAM-only", 5*time.Second, func() bool {
		return c.suffrage()[f.name] == "nonvoter" && l.s.fsm.membersCopy()[oldID].Storage == "ram-only"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	f.s = nil
	if err := os.Remove(filepath.Join(f.dir, markerName)); err != nil { // tmpfs after a power cycle
		t.Fatal(err)
	}
	mustApply(t, l.s, storage.Put("t", "b", []byte("2")))
	f.dev.down.Store(false)
	c.start(f)
	if f.s.ID() != oldID {
		t.Fatalf("restarted under %s, want the old ID %s (the device is all it has)", f.s.ID(), oldID)
	}
	waitFor(t, "the stale ID refused and removed", 10*time.Second, func() bool {
		_, in := c.suffrage()[f.name]
		return !in && markerExists(f.dir) && strings.Contains(f.s.Status().Detail, "removed by the cluster")
	})
	if err := f.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	f.s = nil
	c.start(f)
	if f.s.ID() == oldID {
		t.Fatal("restarted under the refused ID")
	}
	waitFor(t, "fresh ID joined with the current data", 10*time.Second, func() bool {
		v, _ := get(t, f.s, "t", "b")
		return v == "2" && c.voters() == 3
	})
}

// A connection cut during the handshake (a peer being killed) is
// ErrUnreachable and does not blame the cluster key; a peer that speaks no
// TLS at all is ErrWrongKey (not an xedge cluster node).
func TestHandshakeFailureKinds(t *testing.T) {
	ln, err := net.Listen("tcp", takeIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mode := make(chan string, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			switch <-mode {
			case "reset":
				c.(*net.TCPConn).SetLinger(0)
			case "http":
				c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			}
			c.Close()
		}
	}()
	tc, err := clusterTLS(testKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc2 := range []struct {
		mode string
		is   error
	}{{"reset", ErrUnreachable}, {"http", ErrWrongKey}} {
		mode <- tc2.mode
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := dialCluster(ctx, ln.Addr().String(), tc, streamRPC)
		cancel()
		if !errors.Is(err, tc2.is) || (tc2.is == ErrUnreachable && strings.Contains(err.Error(), "wrong cluster key")) {
			t.Fatalf("%s: %v, want %v", tc2.mode, err, tc2.is)
		}
	}
}
