package aiosync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFdatasyncFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := Counts()
	for i := range 20 {
		if _, err := f.Write([]byte("record\n")); err != nil {
			t.Fatal(err)
		}
		if err := Fdatasync(f); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	after := Counts()
	if got := after.Async + after.Fallback - before.Async - before.Fallback; got != 20 {
		t.Fatalf("%d syncs counted, want 20", got)
	}
	if asyncExpected && after.Async-before.Async != 20 {
		t.Fatalf("%d of 20 syncs went through AIO (%d fell back); this kernel has AIO", after.Async-before.Async, after.Fallback-before.Fallback)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil || len(b) != 20*len("record\n") {
		t.Fatalf("read back %d bytes, %v", len(b), err)
	}
}

// A sync reports the same errors as fdatasync(2).
func TestFdatasyncErrors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := Fdatasync(w); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("sync of a pipe: %v, want EINVAL", err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "closed"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := Fdatasync(f); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("sync of a closed file: %v, want an error saying it is closed", err)
	}
}
