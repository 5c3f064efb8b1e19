//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/iscsi/tgt"
)

// capture runs `xedge iscsi ARGS...` in-process and returns its stdout.
func capture(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = runISCSI(ctx, args)
	w.Close()
	os.Stdout = old
	return <-done, err
}

func TestXedgeISCSI(t *testing.T) {
	if err := tgt.Available(); err != nil {
		t.Fatalf("tgtd is a prerequisite of the integration tier: %v", err)
	}
	dir := t.TempDir()
	lun := filepath.Join(dir, "lun.img")
	if err := os.WriteFile(lun, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(lun, 64<<20); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	d, err := tgt.Start(ctx, tgt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	iqn := "iqn.2025-01.org.xedge.test:cli"
	if err := d.AddTarget(1, iqn, map[int]string{1: lun}, tgt.Account{User: "op", Secret: "op-secret-123"}); err != nil {
		t.Fatal(err)
	}
	url := "iscsi://op:op-secret-123@" + d.Portal + "/" + iqn + "/1"

	out, err := capture(t, "discover", "iscsi://op:op-secret-123@"+d.Portal)
	if err != nil || !strings.Contains(out, iqn) || !strings.Contains(out, d.Portal) {
		t.Fatalf("discover: %v\n%s", err, out)
	}
	out, err = capture(t, "inq", url)
	if err != nil || !strings.Contains(out, "VIRTUAL-DISK") || !strings.Contains(out, "67108864 bytes") {
		t.Fatalf("inq: %v\n%s", err, out)
	}
	if strings.Contains(out, "op-secret-123") {
		t.Fatalf("inq printed the secret:\n%s", out)
	}
	out, err = capture(t, "inq", "--json", url)
	var info struct {
		Size      int64 `json:"size_bytes"`
		BlockSize int   `json:"block_size"`
	}
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Size != 64<<20 || info.BlockSize != 512 {
		t.Fatalf("inq --json: %v\n%s", err, out)
	}
	if _, err := capture(t, "bench", url); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("bench without --overwrite: %v", err)
	}
	out, err = capture(t, "bench", "--overwrite", "--writes", "200", "--seq-mib", "16", "--json", url)
	var r struct {
		W struct {
			N   int     `json:"n"`
			P50 float64 `json:"p50_us"`
		} `json:"write_4k_durable"`
		Seq float64 `json:"seq_write_mib_s"`
	}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.W.N != 200 || r.W.P50 <= 0 || r.Seq <= 0 {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	if _, err := capture(t, "inq", "iscsi://op:wrong@"+d.Portal+"/"+iqn+"/1"); err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("inq with a wrong secret: %v", err)
	}
}
