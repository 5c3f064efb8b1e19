package local

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"xedge/storage"
	"xedge/storage/blockdev"
)

// Rows of a RAM table never reach the disk, with either backend (a data
// directory or a block device), through log records and snapshots; disc rows
// do.
func TestRAMRowsNeverOnDisk(t *testing.T) {
	const ramMark, discMark = "RAMONLY-local-93e1", "ONDISC-local-2a7c"
	write := func(t *testing.T, s *Store) {
		must(t, s.Declare(ctx, storage.TableSpec{Name: "d"}))
		must(t, s.Declare(ctx, storage.TableSpec{Name: "r", Copy: storage.RAM}))
		for i := range 300 { // past several snapshots
			mustApply(t, s, storage.Put("d", fmt.Sprintf("k%03d", i), []byte(discMark)),
				storage.Put("r", fmt.Sprintf("k%03d", i), []byte(ramMark)))
		}
		mustApply(t, s, storage.Put("r", "c", []byte(ramMark)).If(storage.CondAbsent))
	}
	check := func(t *testing.T, data []byte) {
		if bytes.Contains(data, []byte(ramMark)) {
			t.Error("a RAM table's row is on disk")
		}
		if !bytes.Contains(data, []byte(discMark)) {
			t.Error("a disc table's row is not on disk")
		}
	}
	t.Run("dir", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir, func(c *Config) { c.SnapshotBytes = 8 << 10 })
		write(t, s)
		stop(t, s)
		var all []byte
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				all = append(all, b...)
			}
			return nil
		})
		check(t, all)
	})
	t.Run("device", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "lun")
		dev, err := blockdev.OpenFile(path, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, Config{Device: dev, Node: "n1", Logger: quiet, SnapshotBytes: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		write(t, s)
		stop(t, s)
		dev.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		check(t, b)
	})
}
