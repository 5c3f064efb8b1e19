package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/storage"
)

var ctx = context.Background()

func open(t *testing.T, dir string, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{Dir: dir, Node: "n1"}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func stop(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func get(t *testing.T, s storage.Store, table, key string) (string, bool) {
	t.Helper()
	tb, err := s.Durable(table)
	if err != nil {
		t.Fatalf("durable %s: %v", table, err)
	}
	v, ok, err := tb.Get(key)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return string(v), ok
}

func mustApply(t *testing.T, s storage.Store, ops ...storage.Op) {
	t.Helper()
	if err := s.Apply(ctx, ops...); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func TestBasicSemantics(t *testing.T) {
	s := open(t, t.TempDir())
	defer stop(t, s)
	if err := s.Apply(ctx, storage.Put("users", "a", nil)); !errors.Is(err, storage.ErrNoTable) {
		t.Fatalf("undeclared table: got %v", err)
	}
	if _, err := s.Durable("users"); !errors.Is(err, storage.ErrNoTable) {
		t.Fatalf("Durable undeclared: %v", err)
	}
	if err := s.Declare(ctx, storage.TableSpec{Name: "users"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Declare(ctx, storage.TableSpec{Name: "users"}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s,
		storage.Put("users", "alice", []byte("1")).If(storage.CondAbsent),
		storage.Put("users", "bob", []byte("2")),
		storage.Put("users", "bob\x00x", []byte("3")),
		storage.Put("users", "carol", []byte("4")))
	// A failing Cond applies nothing and names the key.
	err := s.Apply(ctx, storage.Put("users", "dave", []byte("5")), storage.Put("users", "alice", []byte("x")).If(storage.CondAbsent))
	if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("conflict: %v", err)
	}
	if _, ok := get(t, s, "users", "dave"); ok {
		t.Fatal("partial batch applied")
	}
	if err := s.Apply(ctx, storage.Delete("users", "zed").If(storage.CondPresent)); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("CondPresent: %v", err)
	}
	tb, _ := s.Durable("users")
	var keys []string
	tb.Scan("", func(k string, v []byte) bool { keys = append(keys, k); return true })
	if got := strings.Join(keys, ","); got != "alice,bob,bob\x00x,carol" {
		t.Fatalf("scan order %q", got)
	}
	keys = nil
	tb.Scan("b", func(k string, v []byte) bool { keys = append(keys, k); return false })
	if len(keys) != 1 || keys[0] != "bob" {
		t.Fatalf("scan stop: %q", keys)
	}
	if n, _ := tb.Count("bob"); n != 2 {
		t.Fatalf("count bob = %d", n)
	}
	mustApply(t, s, storage.DeletePrefix("users", "bob"))
	if n, _ := tb.Count(""); n != 2 {
		t.Fatalf("count after DeletePrefix = %d", n)
	}
	// Get returns a copy.
	v, _, _ := tb.Get("alice")
	v[0] = 'X'
	if v, _ := get(t, s, "users", "alice"); v != "1" {
		t.Fatalf("Get aliases state: %q", v)
	}
	// Scan may call Apply.
	tb.Scan("", func(k string, v []byte) bool {
		mustApply(t, s, storage.Put("users", "z"+k, v))
		return true
	})
	info := s.Tables()
	if len(info) != 1 || info[0].Keys != 4 || info[0].Copy != "disc" || info[0].Kind != "durable" {
		t.Fatalf("tables: %+v", info)
	}
	st := s.Status()
	if st.Mode != "durable" || st.Backend != "local" || st.Generation == 0 || st.AppliedIdx == 0 {
		t.Fatalf("status: %+v", st)
	}
}

func TestRestartDiscAndRAM(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "d", Copy: storage.Disc}))
	must(t, s.Declare(ctx, storage.TableSpec{Name: "r", Copy: storage.RAM}))
	for i := 0; i < 100; i++ {
		mustApply(t, s, storage.Put("d", fmt.Sprint(i), []byte{byte(i)}), storage.Put("r", fmt.Sprint(i), []byte{byte(i)}))
	}
	mustApply(t, s, storage.Delete("d", "5"), storage.DeletePrefix("d", "9"))
	inc := s.Incarnation()
	stop(t, s)

	s = open(t, dir)
	if s.Incarnation() <= inc {
		t.Fatalf("incarnation did not grow: %d -> %d", inc, s.Incarnation())
	}
	d, _ := s.Durable("d")
	r, err := s.Durable("r")
	if err != nil {
		t.Fatalf("ram table spec not kept: %v", err)
	}
	if n, _ := d.Count(""); n != 100-1-11 {
		t.Fatalf("disc rows after restart: %d", n)
	}
	if n, _ := r.Count(""); n != 0 {
		t.Fatalf("ram rows after restart: %d", n)
	}
	if sp, _ := s.State().Spec("r"); sp.Copy != storage.RAM {
		t.Fatalf("copy type lost: %+v", sp)
	}
	// ram -> disc persists what is there; disc -> ram forgets on restart.
	mustApply(t, s, storage.Put("r", "kept", []byte("v")))
	must(t, s.Declare(ctx, storage.TableSpec{Name: "r", Copy: storage.Disc}))
	must(t, s.Declare(ctx, storage.TableSpec{Name: "d", Copy: storage.RAM}))
	if n, _ := d.Count(""); n != 88 {
		t.Fatalf("disc->ram must keep rows in RAM, have %d", n)
	}
	stop(t, s)
	s = open(t, dir)
	defer stop(t, s)
	if v, ok := get(t, s, "r", "kept"); !ok || v != "v" {
		t.Fatalf("ram->disc row lost: %q %v", v, ok)
	}
	if n, _ := d.Count(""); n != 0 {
		// d is the old handle of the old store; check via the new one.
	}
	d, _ = s.Durable("d")
	if n, _ := d.Count(""); n != 0 {
		t.Fatalf("disc->ram rows survived restart: %d", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "log-*.wal"))
	if len(m) == 0 {
		t.Fatal("no log segment")
	}
	return m[len(m)-1]
}

func TestTornLastRecord(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	for i := 0; i < 10; i++ {
		mustApply(t, s, storage.Put("t", fmt.Sprint(i), []byte("value")))
	}
	stop(t, s)
	seg := lastSegment(t, dir)
	b, _ := os.ReadFile(seg)
	// Tear the last record: keep only part of it.
	must(t, os.WriteFile(seg, b[:len(b)-3], 0o640))
	s = open(t, dir)
	rec := s.Recovery()
	if rec.Stopped != "" || rec.DroppedBytes == 0 {
		t.Fatalf("torn tail should be dropped quietly: %+v", rec)
	}
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 9 {
		t.Fatalf("rows after torn tail: %d", n)
	}
	// The log continues cleanly after the cut.
	mustApply(t, s, storage.Put("t", "new", nil))
	stop(t, s)
	s = open(t, dir)
	defer stop(t, s)
	tb, _ = s.Durable("t")
	if n, _ := tb.Count(""); n != 10 {
		t.Fatalf("rows after append past cut: %d", n)
	}
	// Garbage tail (full length, wrong CRC) is also a torn write.
}

func TestCorruptMiddleRecord(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	for i := 0; i < 10; i++ {
		mustApply(t, s, storage.Put("t", fmt.Sprintf("k%02d", i), []byte("value")))
	}
	stop(t, s)
	seg := lastSegment(t, dir)
	b, _ := os.ReadFile(seg)
	// Records: declare, then 10 puts of equal size. Corrupt put #5's payload.
	rl := (len(b) - firstLen(b)) / 10
	off := firstLen(b) + 5*rl + recHeader + 4
	b[off] ^= 0xff
	must(t, os.WriteFile(seg, b, 0o640))
	s = open(t, dir)
	defer stop(t, s)
	rec := s.Recovery()
	if rec.Stopped == "" || !strings.Contains(rec.Stopped, "crc") || rec.DroppedBytes != int64(5*rl) {
		t.Fatalf("recovery should stop at the corrupt record: %+v", rec)
	}
	if !strings.Contains(s.Status().Detail, "recovery stopped") {
		t.Fatalf("status does not report corruption: %+v", s.Status())
	}
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 5 {
		t.Fatalf("rows before corrupt record: %d", n)
	}
	if _, err := os.Stat(seg + ".corrupt"); err != nil {
		t.Fatalf("corrupt tail not saved: %v", err)
	}
}

func firstLen(b []byte) int {
	return recHeader + int(uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24)
}

func TestSnapshotAndTruncation(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(c *Config) { c.SnapshotBytes = 4 << 10 })
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	for i := 0; i < 500; i++ {
		mustApply(t, s, storage.Put("t", fmt.Sprintf("k%04d", i%300), []byte(strings.Repeat("x", 50))))
	}
	must(t, s.Snapshot(ctx))
	mustApply(t, s, storage.Put("t", "after", []byte("1")))
	gen := s.Status().Generation
	stop(t, s)
	if gen < 2 {
		t.Fatalf("no snapshot taken: gen %d", gen)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "log-*.wal"))
	if len(segs) > 2 {
		t.Fatalf("log not truncated: %d segments", len(segs))
	}
	s = open(t, dir)
	defer stop(t, s)
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 301 {
		t.Fatalf("rows after snapshot restart: %d", n)
	}
	if rec := s.Recovery(); rec.SnapshotSeq == 0 || rec.Records != 1 {
		t.Fatalf("recovery: %+v", rec)
	}
}

func TestCorruptSnapshotRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	mustApply(t, s, storage.Put("t", "k", []byte("v")))
	must(t, s.Snapshot(ctx))
	stop(t, s)
	p := filepath.Join(dir, "snapshot")
	b, _ := os.ReadFile(p)
	b[len(b)-6] ^= 1
	must(t, os.WriteFile(p, b, 0o640))
	if _, err := Open(ctx, Config{Dir: dir}); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt snapshot: %v", err)
	}
}

func TestConcurrentApplyGetScan(t *testing.T) {
	s := open(t, t.TempDir(), func(c *Config) { c.SnapshotBytes = 8 << 10 })
	defer stop(t, s)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	must(t, s.Declare(ctx, storage.TableSpec{Name: "r", Copy: storage.RAM}))
	tb, _ := s.Durable("t")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				k := fmt.Sprintf("w%d/%03d", w, i)
				if err := s.Apply(ctx, storage.Put("t", k, []byte(k)), storage.Put("r", k, nil)); err != nil {
					t.Error(err)
					return
				}
				if v, ok, _ := tb.Get(k); !ok || string(v) != k {
					t.Errorf("read-your-write %s: %q %v", k, v, ok)
					return
				}
			}
		}(w)
	}
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				prev := ""
				tb.Scan("", func(k string, v []byte) bool {
					if k <= prev || k != string(v) {
						t.Errorf("scan out of order or torn: %q after %q", k, prev)
						return false
					}
					prev = k
					return true
				})
				tb.Count("w1/")
				s.Tables()
				s.Status()
			}
		}()
	}
	// Counters per writer must be consistent: a batch is atomic.
	wg.Wait()
	if n, _ := tb.Count(""); n != 400 {
		t.Fatalf("count %d", n)
	}
}

func TestRAMOnlyAndStopped(t *testing.T) {
	s := open(t, "")
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	mustApply(t, s, storage.Put("t", "k", nil))
	if st := s.Status(); st.Mode != "ram-only" {
		t.Fatalf("status: %+v", st)
	}
	stop(t, s)
	if err := s.Apply(ctx, storage.Put("t", "k", nil)); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("apply after stop: %v", err)
	}
	if _, ok := get(t, s, "t", "k"); !ok {
		t.Fatal("reads must keep working after stop")
	}
}

func TestEphemeral(t *testing.T) {
	s := open(t, t.TempDir())
	defer stop(t, s)
	e := s.Ephemeral("sessions")
	e.Put("alice/res", []byte("1"))
	e.Put("alice/res2", []byte("2"))
	e.Put("bob/x", []byte("3"))
	rows := e.Get("alice/res")
	if len(rows) != 1 || rows[0].Node != "n1" || rows[0].Incarnation != s.Incarnation() || string(rows[0].Value) != "1" {
		t.Fatalf("rows: %+v", rows)
	}
	n := 0
	e.Scan("alice/", func(storage.Row) bool { n++; return true })
	if n != 2 {
		t.Fatalf("scan: %d", n)
	}
	e.Delete("alice/res")
	if len(e.Get("alice/res")) != 0 {
		t.Fatal("delete")
	}
	var info storage.TableInfo
	for _, ti := range s.Tables() {
		if ti.Name == "sessions" {
			info = ti
		}
	}
	if info.Kind != "ephemeral" || info.Keys != 2 {
		t.Fatalf("info: %+v", info)
	}
}

// Group commit: concurrent batches are checked against the batches queued
// before them, so exactly one of many concurrent creates of a key wins, and
// everything acknowledged survives a restart.
func TestGroupCommitConds(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(c *Config) { c.Logger = quiet })
	must(t, s.Declare(ctx, storage.TableSpec{Name: "users"}))
	const workers, keys = 8, 40
	var wins [keys]atomic32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := 0; k < keys; k++ {
				key := fmt.Sprintf("u%02d", k)
				err := s.Apply(ctx, storage.Put("users", key, []byte{byte(w)}).If(storage.CondAbsent),
					storage.Put("users", key+"/by", []byte{byte(w)}))
				switch {
				case err == nil:
					wins[k].add()
				case !errors.Is(err, storage.ErrConflict):
					t.Error(err)
					return
				}
				// Deleting needs the key present; racing deletes: one wins.
				if k%4 == 0 {
					s.Apply(ctx, storage.DeletePrefix("users", key+"/"), storage.Delete("users", key).If(storage.CondPresent))
				}
			}
		}(w)
	}
	wg.Wait()
	for k := range wins {
		if k%4 != 0 && wins[k].n != 1 {
			t.Fatalf("key %d created %d times", k, wins[k].n)
		}
	}
	tb, _ := s.Durable("users")
	before := map[string]string{}
	tb.Scan("", func(k string, v []byte) bool { before[k] = string(v); return true })
	stop(t, s)
	s = open(t, dir, func(c *Config) { c.Logger = quiet })
	defer stop(t, s)
	tb, _ = s.Durable("users")
	after := map[string]string{}
	tb.Scan("", func(k string, v []byte) bool { after[k] = string(v); return true })
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("restart changed the table:\n%v\n%v", before, after)
	}
	for k := 1; k < keys; k++ {
		if k%4 == 0 {
			continue
		}
		key := fmt.Sprintf("u%02d", k)
		if after[key] != after[key+"/by"] {
			t.Fatalf("batch not atomic for %s: %q vs %q", key, after[key], after[key+"/by"])
		}
	}
}

type atomic32 struct {
	mu sync.Mutex
	n  int
}

func (a *atomic32) add() { a.mu.Lock(); a.n++; a.mu.Unlock() }

func TestEphemeralBeforeStart(t *testing.T) {
	s := New(Config{Dir: t.TempDir(), Node: "n1", Logger: quiet})
	e := s.Ephemeral("sessions")
	e.Put("a", nil)
	must(t, s.Start(ctx))
	defer stop(t, s)
	if rows := e.Get("a"); len(rows) != 1 || rows[0].Incarnation != s.Incarnation() || s.Incarnation() == 0 {
		t.Fatalf("rows %+v inc %d", rows, s.Incarnation())
	}
	if rows := s.Ephemeral("sessions").Get("a"); len(rows) != 1 {
		t.Fatal("handle from before Start is not the live table")
	}
}

func TestStopWithConcurrentApplies(t *testing.T) {
	s := open(t, t.TempDir(), func(c *Config) { c.Logger = quiet })
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	var wg sync.WaitGroup
	var okAfterStop atomic32
	stopped := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				err := s.Apply(ctx, storage.Put("t", fmt.Sprintf("%d-%d", w, i), nil))
				if err != nil && !errors.Is(err, storage.ErrUnavailable) {
					t.Error(err)
					return
				}
				select {
				case <-stopped:
					if err == nil {
						okAfterStop.add()
					}
				default:
				}
			}
		}(w)
	}
	time.Sleep(20 * time.Millisecond)
	stop(t, s)
	close(stopped)
	wg.Wait()
	if st := s.Status(); st.Mode != "durable" {
		t.Fatalf("stop must not look like storage loss: %+v", st)
	}
	if okAfterStop.n > 4 { // at most one in flight per writer when Stop returned
		t.Fatalf("%d applies succeeded after Stop returned", okAfterStop.n)
	}
}

// Stop must release the retry loop even when the store was already marked
// not running (a unit run under -race once hung here for 10 minutes).
func TestStopReleasesRetryLoopAlways(t *testing.T) {
	s, err := Open(ctx, Config{Dir: t.TempDir(), Logger: quiet, RetryEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.wmu.Lock()
	s.running = false
	s.wmu.Unlock()
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
