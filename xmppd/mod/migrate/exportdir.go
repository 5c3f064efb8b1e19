package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"xedge/storage"
	"xedge/xmppd/piefxis"
)

// ExportFiles names the files of an export in ejabberd's export_piefxis
// layout: the main file STAMP.xml (a server-data that includes each host's
// file) and STAMP_HOST.xml per host, STAMP the UTC time as 20060102-150405.
func ExportFiles(dir string, now time.Time, hosts []string) (main string, perHost []string) {
	stamp := now.UTC().Format("20060102-150405")
	for _, h := range hosts {
		perHost = append(perHost, filepath.Join(dir, stamp+"_"+strings.NewReplacer("@", "_", "/", "_", "\\", "_").Replace(h)+".xml"))
	}
	return filepath.Join(dir, stamp+".xml"), perHost
}

// ExportDir writes the accounts of every host (def: the default host, whose
// users are keyed by localpart) into dir in ejabberd's layout (ExportFiles),
// each host's users in its own file, so an import keeps the hosts apart and
// `ejabberdctl import_piefxis` takes the main file. The files are written
// under temporary names and renamed once all are complete, the main file last:
// an export is complete or absent. Summary.File is the main file, Hosts the
// users written per host.
func ExportDir(ctx context.Context, st storage.Store, dir string, hosts []string, def string, now time.Time, prog *Progress) (Summary, error) {
	start := time.Now()
	if prog == nil {
		prog = &Progress{}
	}
	mainPath, files := ExportFiles(dir, now, hosts)
	if _, err := os.Stat(mainPath); err == nil {
		return Summary{}, fmt.Errorf("migrate: %s exists (an export made in the same second): try again", mainPath)
	}
	sum := Summary{File: mainPath, Hosts: map[string]int{}}
	var tmps []string
	defer func() {
		for _, t := range tmps {
			os.Remove(t)
		}
	}()
	create := func(path string) (*os.File, error) {
		f, err := os.OpenFile(path+".partial", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			tmps = append(tmps, path+".partial")
		}
		return f, err
	}
	var hrefs []string
	for i, h := range hosts {
		f, err := create(files[i])
		if err != nil {
			return sum, fmt.Errorf("migrate: %w", err)
		}
		w, err := piefxis.NewHostWriter(f, h)
		var n Summary
		if err == nil {
			n, err = ExportHost(ctx, st, h, def, w, prog)
		}
		if err == nil {
			err = w.Close()
		}
		err = closeSynced(f, err)
		if err != nil {
			return sum, fmt.Errorf("migrate: export of %s: %w", h, err)
		}
		sum.add(n)
		sum.Hosts[h] = n.Users
		hrefs = append(hrefs, filepath.Base(files[i]))
	}
	f, err := create(mainPath)
	if err != nil {
		return sum, fmt.Errorf("migrate: %w", err)
	}
	if err := closeSynced(f, piefxis.WriteMain(f, hrefs)); err != nil {
		return sum, fmt.Errorf("migrate: %w", err)
	}
	var done []string
	for _, p := range append(files, mainPath) {
		if err := os.Rename(p+".partial", p); err != nil {
			for _, d := range done {
				os.Remove(d)
			}
			return sum, fmt.Errorf("migrate: %w", err)
		}
		done = append(done, p)
	}
	tmps = nil
	sum.Files = done
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// closeSynced syncs and closes f after a write that ended with err.
func closeSynced(f *os.File, err error) error {
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}
