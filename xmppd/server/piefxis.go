package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"xedge/xmppd/mod/migrate"
)

// The XEP-0227 migration feature: `xmppctl import-piefxis FILE` and
// `export-piefxis DIR` run as one background job at a time (an import of
// 100,000 users outlives an admin request); `piefxis-status` reports the running
// or last job's progress, which xmppctl polls and prints. Paths are read and
// written by xmppd itself, as ejabberdctl's import_piefxis does.

func init() { registerFeature(Feature{Name: "piefxis", Build: buildPIEFXIS}) }

type piefxisFeature struct {
	s      *Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	job *piefxisJob
}

type piefxisJob struct {
	Kind    string // import or export
	File    string
	Started time.Time
	prog    migrate.Progress

	done    bool
	err     error
	summary migrate.Summary
	ended   time.Time
}

// PIEFXISStatus is piefxis-status's answer.
type PIEFXISStatus struct {
	Kind       string           `json:"kind,omitempty"` // import or export; empty: no job since start
	State      string           `json:"state"`          // none, running, done, failed
	File       string           `json:"file,omitempty"`
	Users      int64            `json:"users"`
	Total      int64            `json:"total,omitempty"` // users to write (export)
	Written    int64            `json:"written"`
	BytesRead  int64            `json:"bytes_read"`
	BytesTotal int64            `json:"bytes_total"`
	Batches    int64            `json:"batches"`
	Rows       int64            `json:"rows"`
	Seconds    float64          `json:"seconds"`
	Error      string           `json:"error,omitempty"`
	Summary    *migrate.Summary `json:"summary,omitempty"`
}

func buildPIEFXIS(s *Server) ([]StagedComponent, error) {
	s.Modules = append(s.Modules, migrate.New())
	f := &piefxisFeature{s: s}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	s.Admin.Handle("import-piefxis", f.startImport)
	s.Admin.Handle("export-piefxis", f.startExport)
	s.Admin.Handle("piefxis-status", func(context.Context, []string) (any, error) { return f.status(), nil })
	return []StagedComponent{{Stage: AfterModules, Name: "piefxis", Start: func(context.Context) error { return nil }, Stop: f.stop}}, nil
}

func (f *piefxisFeature) stop(ctx context.Context) error {
	f.cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("piefxis: job still running at stop: %w", ctx.Err())
	}
}

// begin registers a new job unless one runs.
func (f *piefxisFeature) begin(kind, file string) (*piefxisJob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.job != nil && !f.job.done {
		return nil, fmt.Errorf("an %s of %s is running (xmppctl piefxis-status)", f.job.Kind, f.job.File)
	}
	f.job = &piefxisJob{Kind: kind, File: file, Started: time.Now()}
	return f.job, nil
}

func (f *piefxisFeature) finish(j *piefxisJob, sum migrate.Summary, err error) {
	f.mu.Lock()
	j.done, j.err, j.summary, j.ended = true, err, sum, time.Now()
	f.mu.Unlock()
	log := f.s.log.With("component", "piefxis", "file", j.File)
	if err != nil {
		log.Error(j.Kind+" failed", "users", sum.Users, "err", err)
		return
	}
	log.Info(j.Kind+" done", "users", sum.Users, "created", sum.Created, "existing", sum.Existing,
		"roster_items", sum.RosterItems, "offline", sum.Offline, "warnings", len(sum.Warnings), "seconds", sum.Seconds)
}

func (f *piefxisFeature) startImport(_ context.Context, args []string) (any, error) {
	skip := len(args) == 2 && args[1] == "--skip-unknown-hosts"
	if len(args) < 1 || len(args) > 2 || (len(args) == 2 && !skip) || !filepath.IsAbs(args[0]) {
		return nil, errors.New("usage: import-piefxis /absolute/path/file.xml [--skip-unknown-hosts] (or a directory of Prosody's USER@HOST.xml files)")
	}
	path := args[0]
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	j, err := f.begin("import", path)
	if err != nil {
		return nil, err
	}
	f.s.log.Info("import started", "component", "piefxis", "file", path)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		sum, err := migrate.Import(f.ctx, f.s.Store, migrate.ImportOptions{Domain: f.s.cfg.Domain, Hosts: f.s.cfg.HostNames(), SkipUnknownHosts: skip}, path, &j.prog)
		f.finish(j, sum, err)
	}()
	return f.status(), nil
}

func (f *piefxisFeature) startExport(_ context.Context, args []string) (any, error) {
	if len(args) < 1 || len(args) > 2 || !filepath.IsAbs(args[0]) {
		return nil, errors.New("usage: export-piefxis /absolute/path/dir [HOST]")
	}
	dir := args[0]
	hosts := f.s.cfg.HostNames()
	if len(args) == 2 { // ejabberdctl export_piefxis_host DIR HOST: that host only
		d, err := f.s.servedHost(args[1])
		if err != nil {
			return nil, err
		}
		hosts = []string{d}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	now := time.Now()
	path, _ := migrate.ExportFiles(dir, now, hosts)
	j, err := f.begin("export", path)
	if err != nil {
		return nil, err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		sum, err := migrate.ExportDir(f.ctx, f.s.Store, dir, hosts, f.s.cfg.Domain, now, &j.prog)
		sum.File = path
		f.finish(j, sum, err)
	}()
	return f.status(), nil
}

func (f *piefxisFeature) status() PIEFXISStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.job
	if j == nil {
		return PIEFXISStatus{State: "none"}
	}
	st := PIEFXISStatus{Kind: j.Kind, File: j.File, State: "running",
		Users: j.prog.Users.Load(), Total: j.prog.Total.Load(), Written: j.prog.Written.Load(), BytesRead: j.prog.BytesRead.Load(),
		BytesTotal: j.prog.BytesTotal.Load(), Batches: j.prog.Batches.Load(), Rows: j.prog.RowsWritten.Load()}
	end := time.Now()
	if j.done {
		end = j.ended
		st.State = "done"
		if j.err != nil {
			st.State, st.Error = "failed", j.err.Error()
		}
		sum := j.summary
		st.Summary = &sum
	}
	st.Seconds = end.Sub(j.Started).Seconds()
	return st
}
