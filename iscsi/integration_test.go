//go:build integration

package iscsi_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/tgt"
)

// The target setup is cross-checked with libiscsi's tools, a second and
// independent initiator, so a failure here is ours and not the lab's.
func TestTgtDiscoveryAndInquiry(t *testing.T) {
	l := startLab(t, tgt.Options{}, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if out, err := exec.Command("iscsi-ls", "iscsi://"+l.d.Portal).CombinedOutput(); err != nil || !strings.Contains(string(out), l.iqn) {
		t.Fatalf("iscsi-ls does not see %s: %v\n%s", l.iqn, err, out)
	}
	ts, err := iscsi.DiscoverURL(ctx, "iscsi://"+l.d.Portal)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Name != l.iqn || len(ts[0].Addresses) == 0 || !strings.HasPrefix(ts[0].Addresses[0], l.d.Portal) {
		t.Fatalf("discovered %+v, want %s at %s", ts, l.iqn, l.d.Portal)
	}

	out, err := exec.Command("iscsi-readcapacity16", "iscsi://"+l.d.Portal+"/"+l.iqn+"/1").CombinedOutput()
	if err != nil {
		t.Fatalf("iscsi-readcapacity16: %v\n%s", err, out)
	}
	d := dial(t, l.config(1))
	inq := d.Inquiry()
	if inq.Vendor != "IET" || inq.DeviceType != 0 {
		t.Errorf("inquiry %+v", inq)
	}
	if d.Size() != lunSize || d.BlockSize() != 512 {
		t.Errorf("size %d block %d, want %d and 512", d.Size(), d.BlockSize(), lunSize)
	}
	if !strings.Contains(string(out), "Total capacity:67108864") && !strings.Contains(string(out), "67108864") {
		t.Logf("iscsi-readcapacity16 says:\n%s", out)
	}
	// A LUN that does not exist, a target that does not exist.
	bad := l.config(7)
	if _, err := iscsi.Dial(ctx, bad); err == nil {
		t.Error("dial of LUN 7 succeeded")
	}
	bad = l.config(1)
	bad.Target += "-nope"
	if _, err := iscsi.Dial(ctx, bad); !errors.Is(err, iscsi.ErrTargetNotFound) {
		t.Errorf("dial of an unknown target: %v, want ErrTargetNotFound", err)
	}
}

// rwSizes cross immediate data (64 KiB first burst), R2T sequences (256 KiB
// bursts), multi-PDU Data-In and Data-Out, and the 1 MiB split into concurrent
// commands.
var rwSizes = []int{512, 4096, 8192 + 512, 65536, 65536 + 4096, 262144 + 512, 1 << 20, 3<<20 + 4096}

func TestTgtReadWrite(t *testing.T) {
	l := startLab(t, tgt.Options{}, 1)
	cases := []struct {
		name string
		mod  func(*iscsi.Config)
	}{
		{"defaults", func(*iscsi.Config) {}},
		{"initial-r2t-no-immediate", func(c *iscsi.Config) { c.InitialR2T = true; c.NoImmediateData = true }},
		{"small-pdus", func(c *iscsi.Config) {
			c.MaxRecvDataSegmentLength = 4096
			c.MaxBurstLength = 16384
			c.FirstBurstLength = 8192
			c.MaxTransfer = 256 << 10
		}},
		{"writeback", func(c *iscsi.Config) { c.WriteBack = true }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := l.config(1)
			tc.mod(&cfg)
			d := dial(t, cfg)
			rng := rand.New(rand.NewPCG(uint64(len(tc.name)), 7))
			for _, n := range rwSizes {
				buf := make([]byte, n)
				for i := range buf {
					buf[i] = byte(rng.Uint32())
				}
				off := int64(rng.IntN(int(d.Size()-int64(n))/512)) * 512
				if w, err := d.WriteAt(buf, off); err != nil || w != n {
					t.Fatalf("write %d at %d: %d, %v", n, off, w, err)
				}
				if err := d.Sync(); err != nil {
					t.Fatal(err)
				}
				mustEqual(t, "backing file after write", l.backing(t, 1, off, n), buf)
				got := make([]byte, n)
				if r, err := d.ReadAt(got, off); err != nil || r != n {
					t.Fatalf("read %d at %d: %d, %v", n, off, r, err)
				}
				mustEqual(t, "read back", got, buf)
				// An unaligned read through the bounce buffer.
				if n > 100 {
					part := make([]byte, n-100)
					if _, err := d.ReadAt(part, off+37); err != nil {
						t.Fatal(err)
					}
					mustEqual(t, "unaligned read", part, buf[37:37+len(part)])
				}
			}
			if _, err := d.WriteAt(make([]byte, 100), 0); !errors.Is(err, iscsi.ErrUnaligned) {
				t.Errorf("unaligned write: %v", err)
			}
			if _, err := d.WriteAt(make([]byte, 512), d.Size()); !errors.Is(err, iscsi.ErrOutOfRange) {
				t.Errorf("write past the end: %v", err)
			}
			end := make([]byte, 1024)
			if n, err := d.ReadAt(end, d.Size()-512); n != 512 || err == nil {
				t.Errorf("read across the end: %d, %v; want 512, EOF", n, err)
			}
		})
	}
}

// Many goroutines, each on its own region, keep several commands in flight.
func TestTgtConcurrent(t *testing.T) {
	l := startLab(t, tgt.Options{}, 1)
	d := dial(t, l.config(1))
	const workers, per = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			base := int64(w) * (lunSize / workers)
			for i := 0; i < per; i++ {
				n := (1 + rng.IntN(64)) * 4096
				buf := make([]byte, n)
				for j := range buf {
					buf[j] = byte(rng.Uint32())
				}
				off := base + int64(rng.IntN(int(lunSize/workers-int64(n))/4096))*4096
				if _, err := d.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
				got := make([]byte, n)
				if _, err := d.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if string(got) != string(buf) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestTgtDigests(t *testing.T) {
	l := startLab(t, tgt.Options{}, 1)
	cfg := l.config(1)
	cfg.HeaderDigest, cfg.DataDigest = true, true
	// tgtd offers no digests until told to; a refusal fails the login.
	if _, err := iscsi.Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("dial with digests a target refuses: %v", err)
	}
	for _, k := range []string{"HeaderDigest", "DataDigest"} {
		if err := l.d.SetParam(1, k, "CRC32C,None"); err != nil {
			t.Fatal(err)
		}
	}
	d := dial(t, cfg)
	if p := d.Stats().Params; !p.HeaderDigest || !p.DataDigest {
		t.Fatalf("digests not negotiated: %+v", p)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	for _, n := range rwSizes {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		off := int64(rng.IntN(int(d.Size()-int64(n))/512)) * 512
		if _, err := d.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "backing file", l.backing(t, 1, off, n), buf)
		got := make([]byte, n)
		if _, err := d.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read back", got, buf)
	}
	// Header digest only, then data digest only.
	for _, hd := range []bool{true, false} {
		cfg := l.config(1)
		cfg.HeaderDigest, cfg.DataDigest = hd, !hd
		d := dial(t, cfg)
		buf := make([]byte, 300<<10)
		fill(rng, buf)
		if _, err := d.WriteAt(buf, 1<<20); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(buf))
		if _, err := d.ReadAt(got, 1<<20); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read back", got, buf)
	}
}

func TestTgtCHAP(t *testing.T) {
	l := startLab(t, tgt.Options{}, 1,
		tgt.Account{User: "node1", Secret: "s3cret-node-one"},
		tgt.Account{User: "tgt1", Secret: "s3cret-target-1", Outgoing: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	try := func(user, secret, tuser, tsecret string) error {
		cfg := l.config(1)
		cfg.User, cfg.Secret, cfg.TargetUser, cfg.TargetSecret = user, secret, tuser, tsecret
		d, err := iscsi.Dial(ctx, cfg)
		if err == nil {
			defer d.Close()
			buf := make([]byte, 4096)
			fill(rand.New(rand.NewPCG(1, 1)), buf)
			if _, err := d.WriteAt(buf, 0); err != nil {
				return err
			}
			mustEqual(t, "backing file", l.backing(t, 1, 0, 4096), buf)
		}
		return err
	}
	if err := try("node1", "s3cret-node-one", "", ""); err != nil {
		t.Errorf("one-way CHAP: %v", err)
	}
	if err := try("node1", "s3cret-node-one", "tgt1", "s3cret-target-1"); err != nil {
		t.Errorf("mutual CHAP: %v", err)
	}
	// The same through a URL.
	u := "iscsi://node1:s3cret-node-one@" + l.d.Portal + "/" + l.iqn + "/1?target_user=tgt1&target_secret=s3cret-target-1"
	ucfg, err := iscsi.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	ucfg.Logger = testLogger()
	if d, err := iscsi.Dial(ctx, ucfg); err != nil {
		t.Errorf("mutual CHAP by URL: %v", err)
	} else {
		d.Close()
	}
	for _, c := range []struct {
		name                         string
		user, secret, tuser, tsecret string
	}{
		{"wrong secret", "node1", "wrong-secret-xx", "", ""},
		{"unknown user", "nobody", "s3cret-node-one", "", ""},
		{"no credentials", "", "", "", ""},
		{"wrong target secret", "node1", "s3cret-node-one", "tgt1", "not-the-target"},
		{"wrong target name", "node1", "s3cret-node-one", "imposter", "s3cret-target-1"},
	} {
		if err := try(c.user, c.secret, c.tuser, c.tsecret); !errors.Is(err, iscsi.ErrAuth) {
			t.Errorf("%s: %v, want ErrAuth", c.name, err)
		}
	}
	// libiscsi agrees about the account.
	out, err := exec.Command("iscsi-inq", "iscsi://node1%s3cret-node-one@"+l.d.Portal+"/"+l.iqn+"/1").CombinedOutput()
	if err != nil {
		t.Errorf("iscsi-inq with CHAP: %v\n%s", err, out)
	}
}

// Two initiators (two sessions, two ISIDs) on two LUNs of one target, at once.
func TestTgtTwoInitiators(t *testing.T) {
	l := startLab(t, tgt.Options{}, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for lun := 1; lun <= 2; lun++ {
		cfg := l.config(lun)
		cfg.InitiatorName = "iqn.2025-01.org.xedge.test:node" + string(rune('0'+lun))
		d := dial(t, cfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(lun), 9))
			for i := 0; i < 200; i++ {
				n := (1 + rng.IntN(32)) * 4096
				buf := make([]byte, n)
				fill(rng, buf)
				off := int64(rng.IntN(int(lunSize-int64(n))/4096)) * 4096
				if _, err := d.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
				if got := l.backing(t, lun, off, n); string(got) != string(buf) {
					errs <- errors.New("backing file differs after a write")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
