//go:build integration

package iscsi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/tgt"
)

// lab is one tgtd with one target and file-backed LUNs.
type lab struct {
	d     *tgt.Daemon
	iqn   string
	files map[int]string
}

const lunSize = 64 << 20

func startLab(t *testing.T, o tgt.Options, luns int, accounts ...tgt.Account) *lab {
	t.Helper()
	if err := tgt.Available(); err != nil {
		t.Fatalf("tgtd is a prerequisite of the integration tier: %v", err)
	}
	dir := t.TempDir()
	if o.Log == nil {
		f, err := os.Create(filepath.Join(dir, "tgtd.log"))
		if err != nil {
			t.Fatal(err)
		}
		o.Log = f
		t.Cleanup(func() {
			f.Close()
			if t.Failed() {
				b, _ := os.ReadFile(f.Name())
				t.Logf("tgtd log:\n%s", b)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := tgt.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	l := &lab{d: d, iqn: fmt.Sprintf("iqn.2025-01.org.xedge.test:%s", sanitize(t.Name())), files: map[int]string{}}
	for i := 1; i <= luns; i++ {
		f := filepath.Join(dir, fmt.Sprintf("lun%d.img", i))
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, lunSize); err != nil {
			t.Fatal(err)
		}
		l.files[i] = f
	}
	if err := d.AddTarget(1, l.iqn, l.files, accounts...); err != nil {
		t.Fatal(err)
	}
	return l
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-':
		case c >= 'A' && c <= 'Z':
			b[i] = c + 'a' - 'A'
		default:
			b[i] = '-'
		}
	}
	return string(b)
}

func (l *lab) config(lun int) iscsi.Config {
	return iscsi.Config{Portal: l.d.Portal, Target: l.iqn, LUN: uint64(lun), Logger: testLogger()}
}

func testLogger() *slog.Logger {
	if os.Getenv("ISCSI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(discard{}, nil))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func dial(t *testing.T, cfg iscsi.Config) *iscsi.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := iscsi.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.Redacted(), err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// backing reads n bytes of the LUN's backing file at off, bypassing tgtd.
func (l *lab) backing(t *testing.T, lun int, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(l.files[lun])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes differ from byte %d on", what, len(want), i)
	}
}

func fill(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}
