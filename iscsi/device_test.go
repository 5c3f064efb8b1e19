package iscsi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func quietLogger() *slog.Logger {
	if os.Getenv("ISCSI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5555))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func dialFake(t testing.TB, cfg Config) *Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// Every data path: immediate data, unsolicited Data-Out (InitialR2T=No, which
// tgtd never agrees to), R2T sequences, multi-PDU Data-In, with and without
// digests.
func TestFakeTargetReadWrite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		initialR2T bool
		immediate  bool
		digests    bool
	}{
		{"unsolicited", false, true, false},
		{"unsolicited-no-immediate", false, false, false},
		{"r2t-only", true, false, false},
		{"digests", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ft := newFakeTarget(t, func(ft *fakeTarget) {
				ft.initialR2T, ft.immediateData, ft.digests = tc.initialR2T, tc.immediate, tc.digests
			})
			cfg := ft.config()
			cfg.HeaderDigest, cfg.DataDigest = tc.digests, tc.digests
			d := dialFake(t, cfg)
			if d.Size() != 1<<20 || d.BlockSize() != 512 {
				t.Fatalf("size %d, block %d", d.Size(), d.BlockSize())
			}
			if p := d.Stats().Params; p.InitialR2T != tc.initialR2T || p.ImmediateData != tc.immediate || p.HeaderDigest != tc.digests {
				t.Fatalf("negotiated %+v", p)
			}
			for i, n := range []int{512, 8192, 65536 + 512, 300 << 10} {
				buf := randBytes(uint64(i), n)
				off := int64(i) * 4096
				if _, err := d.WriteAt(buf, off); err != nil {
					t.Fatalf("write %d: %v", n, err)
				}
				ft.mu.Lock()
				ok := bytes.Equal(ft.disk[off:off+int64(n)], buf)
				ft.mu.Unlock()
				if !ok {
					t.Fatalf("write of %d bytes did not land", n)
				}
				got := make([]byte, n)
				if _, err := d.ReadAt(got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, buf) {
					t.Fatalf("read back of %d bytes differs", n)
				}
			}
		})
	}
}

func TestReconnectAfterReset(t *testing.T) {
	ft := newFakeTarget(t)
	cfg := ft.config()
	d := dialFake(t, cfg)
	lost := d.Changed()
	ft.mu.Lock()
	for _, c := range ft.conns {
		c.Close()
	}
	ft.mu.Unlock()
	select {
	case <-lost:
	case <-time.After(3 * time.Second):
		t.Fatal("reset not noticed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if s := d.Stats(); s.Logins != 2 || s.Losses != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ft := newFakeTarget(t)
	cfg := ft.config()
	cfg.Portal = "127.0.0.1:1" // nothing listens: Run keeps retrying
	d := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	if _, err := d.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrReconnecting) {
		t.Errorf("write before any login: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
	d.Close()
	if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
}

func TestWriteBackSyncAfterLoss(t *testing.T) {
	ft := newFakeTarget(t)
	cfg := ft.config()
	cfg.WriteBack = true
	d := dialFake(t, cfg)
	if _, err := d.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	lost := d.Changed()
	ft.mu.Lock()
	for _, c := range ft.conns {
		c.Close()
	}
	ft.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-lost:
	case <-ctx.Done():
		t.Fatal("loss not noticed")
	}
	if err := d.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("sync after a loss with unsynced writes: %v, want ErrConnectionLost", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("second sync: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	c, err := ParseURL("iscsi://node1:pa%3Ass@10.0.0.5:3261/iqn.2025-01.org.xedge:lun/3?digest=crc32c&target_user=t&target_secret=ts&timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if c.Portal != "10.0.0.5:3261" || c.Target != "iqn.2025-01.org.xedge:lun" || c.LUN != 3 || c.User != "node1" ||
		c.Secret != "pa:ss" || !c.HeaderDigest || !c.DataDigest || c.TargetUser != "t" || c.TargetSecret != "ts" ||
		c.TaskTimeout != 2*time.Second {
		t.Fatalf("%+v", c)
	}
	c, err = ParseURL("iscsi://[::1]/iqn.x")
	if err != nil || c.Portal != "[::1]:3260" || c.LUN != 0 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"http://h/x/1", "iscsi:///x/1", "iscsi://h/x/y", "iscsi://h/x/1/2", "iscsi://h/x/1?digest=md5", "iscsi://h/x/1?timeout=soon"} {
		if _, err := ParseURL(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if r := (Config{Portal: "h:1", Target: "t", User: "u", Secret: "s"}).Redacted(); r != "iscsi://u:xxxxx@h:1/t/0" {
		t.Errorf("redacted %s", r)
	}
}

func TestNegotiation(t *testing.T) {
	cfg := Config{HeaderDigest: true}.withDefaults()
	n := newNegotiation(&cfg, false)
	reply, err := n.handle([]kv{
		{"HeaderDigest", "CRC32C"}, {"DataDigest", "None"}, {"MaxRecvDataSegmentLength", "8192"},
		{"InitialR2T", "Yes"}, {"ImmediateData", "Yes"}, {"MaxBurstLength", "1048576"},
		{"FirstBurstLength", "16384"}, {"MaxOutstandingR2T", "4"}, {"X-vendor", "1"},
		{"TargetAlias", "disk"}, {"DefaultTime2Wait", "Irrelevant"},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := n.done()
	if err != nil {
		t.Fatal(err)
	}
	if !p.HeaderDigest || p.DataDigest || p.TargetMaxRecvDSL != 8192 || !p.InitialR2T || !p.ImmediateData ||
		p.MaxBurstLength != 256<<10 || p.FirstBurstLength != 16384 || p.MaxOutstandingR2T != 1 {
		t.Fatalf("%+v", p)
	}
	if len(reply) != 1 || reply[0] != (kv{"X-vendor", "NotUnderstood"}) {
		t.Fatalf("reply %v", reply)
	}
	// A target proposing keys we did not offer gets answers.
	n = newNegotiation(&cfg, true)
	reply, err = n.handle([]kv{{"MaxBurstLength", "4096"}, {"ImmediateData", "Yes"}, {"InitialR2T", "No"}})
	if err != nil || len(reply) != 3 || reply[0].v != "4096" || reply[1].v != "Yes" || reply[2].v != "No" {
		t.Fatalf("reply %v, %v", reply, err)
	}
	for _, bad := range [][]kv{
		{{"MaxBurstLength", "0"}}, {{"MaxBurstLength", "abc"}}, {{"InitialR2T", "maybe"}},
		{{"HeaderDigest", "MD5"}}, {{"MaxRecvDataSegmentLength", "99999999999"}},
	} {
		n := newNegotiation(&cfg, false)
		if _, err := n.handle(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

func TestParseText(t *testing.T) {
	kvs, err := parseText([]byte("A=1\x00B=x=y\x00\x00\x00"))
	if err != nil || len(kvs) != 2 || kvs[1] != (kv{"B", "x=y"}) {
		t.Fatalf("%v %v", kvs, err)
	}
	for _, bad := range []string{"noequals\x00", "=v\x00", string(make([]byte, 0)) + "K" + string(bytes.Repeat([]byte("k"), 70)) + "=v"} {
		if _, err := parseText([]byte(bad)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if string(encodeText([]kv{{"A", "1"}})) != "A=1\x00" {
		t.Fatal("encode")
	}
}

func TestCHAPResponse(t *testing.T) {
	// RFC 1994: MD5(id || secret || challenge).
	got := chapResponse(1, "secret", []byte{0xde, 0xad})
	b, err := decodeCHAPBinary("0x" + "dead")
	if err != nil || !bytes.Equal(b, []byte{0xde, 0xad}) {
		t.Fatal(b, err)
	}
	if b, err := decodeCHAPBinary("0b3q0="); err != nil || !bytes.Equal(b, []byte{0xde, 0xad}) {
		t.Fatal(b, err)
	}
	if len(got) != 16 {
		t.Fatal(len(got))
	}
	if _, err := decodeCHAPBinary("dead"); err == nil {
		t.Fatal("accepted a value without 0x/0b")
	}
}

// With a CmdSN window of one command, concurrent I/O still completes and the
// initiator never sends past MaxCmdSN.
func TestCmdSNWindow(t *testing.T) {
	ft := newFakeTarget(t, func(ft *fakeTarget) { ft.window = 1 })
	cfg := ft.config()
	cfg.MaxTransfer = 4096
	d := dialFake(t, cfg)
	buf := randBytes(1, 64<<10)
	if _, err := d.WriteAt(buf, 0); err != nil { // 16 concurrent commands
		t.Fatal(err)
	}
	got := make([]byte, len(buf))
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Fatal("read back differs")
	}
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.violations != 0 {
		t.Fatalf("%d commands sent beyond MaxCmdSN", ft.violations)
	}
}

// A portal that redirects the login is followed once.
func TestLoginRedirect(t *testing.T) {
	ft := newFakeTarget(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := newPDUReader(c, 1<<16)
			if p, err := r.read(); err == nil {
				resp := &pdu{}
				resp.bhs[0] = opLoginResp
				resp.bhs[36], resp.bhs[37] = 1, 1 // moved temporarily
				resp.setITT(p.itt())
				resp.data = encodeText([]kv{{"TargetAddress", ft.addr + ",1"}})
				var w pduWriter
				w.add(resp)
				w.flush(c)
			}
			c.Close()
		}
	}()
	cfg := ft.config()
	cfg.Portal = ln.Addr().String()
	d := dialFake(t, cfg)
	if _, err := d.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkWrite4K measures the initiator's own cost per durable 4 KiB write
// against the in-memory fake target (no disk, loopback TCP).
func BenchmarkWrite4K(b *testing.B) {
	ft := newFakeTarget(b)
	cfg := ft.config()
	d := dialFake(b, cfg)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.WriteAt(buf, int64(i%200)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// iscsiGoroutines lists goroutines running code of this package (not tests).
func iscsiGoroutines() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "xedge/iscsi.(*conn)") || strings.Contains(g, "xedge/iscsi.(*Device)") {
			if !strings.Contains(g, "_test.go") {
				out = append(out, g)
			}
		}
	}
	return out
}

// Close (after a reset, a re-login and I/O) leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	ft := newFakeTarget(t)
	d := dialFake(t, ft.config())
	if _, err := d.WriteAt(randBytes(3, 300<<10), 0); err != nil {
		t.Fatal(err)
	}
	lost := d.Changed()
	ft.mu.Lock()
	for _, c := range ft.conns {
		c.Close()
	}
	ft.mu.Unlock()
	<-lost
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if len(iscsiGoroutines()) == 0 {
		t.Fatal("the leak detector sees no goroutine of a live device")
	}
	d.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		g := iscsiGoroutines()
		if len(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close:\n%s", len(g), strings.Join(g, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
