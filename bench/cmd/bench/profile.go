package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
)

// profiler records `perf record -g` CPU profiles of xmppd (the one server whose
// code we can change) during each workload, into dir/xmppd-<workload>.perf.data.
// Read them with `perf report -i FILE --stdio`. xmppd must be built with symbols
// (`go build -o /tmp/xmppd ./xmppd/cmd/xmppd`; make build strips them with -s -w).
//
// With genDir set it also records a pprof CPU profile of the load generator itself
// (this process) for every server and workload, genDir/gen-<server>-<workload>.pprof
// (`go tool pprof -top FILE`): what the instrument spends its core on.
type profiler struct {
	dir    string
	genDir string
	server string
	pid    func() int
	log    *slog.Logger
}

func newProfiler(dir, genDir, server string, pid func() int, log *slog.Logger) *profiler {
	return &profiler{dir: dir, genDir: genDir, server: server, pid: pid, log: log}
}

// start begins the profiles of a phase and returns the function that ends them.
func (p *profiler) start(phase string) func() {
	stopGen := p.startGen(phase)
	stopServer := p.startServer(phase)
	return func() { stopServer(); stopGen() }
}

// startGen profiles the generator (pprof) during a phase.
func (p *profiler) startGen(phase string) func() {
	if p.genDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(p.genDir, 0o755); err != nil {
		p.log.Warn("generator profile dir", "err", err)
		return func() {}
	}
	out := filepath.Join(p.genDir, "gen-"+p.server+"-"+phase+".pprof")
	f, err := os.Create(out)
	if err != nil {
		p.log.Warn("generator profile", "err", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		p.log.Warn("generator profile", "err", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		p.log.Info("generator profile written", "file", out)
	}
}

// startServer records perf data of xmppd during a phase.
func (p *profiler) startServer(phase string) func() {
	if p.dir == "" || p.server != "xmppd" {
		return func() {}
	}
	pid := p.pid()
	if pid == 0 {
		return func() {}
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		p.log.Warn("profile dir", "err", err)
		return func() {}
	}
	out := filepath.Join(p.dir, p.server+"-"+phase+".perf.data")
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.log.Warn("perf record", "err", err)
		return func() {}
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		p.log.Info("profile written", "file", out)
	}
}

// jsonMap turns a struct into a generic map for the results file.
func jsonMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	return m, nil
}
