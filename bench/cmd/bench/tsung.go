package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xedge/bench"
	"xedge/bench/servers"
)

// tsungResult is what the harness reads from tsung.log.
type tsungResult struct {
	Users         int     `json:"users"`
	Seconds       int     `json:"arrival_seconds"`
	Requests      int64   `json:"requests"`
	MeanRequestMs float64 `json:"mean_request_ms"`
	MeanConnectMs float64 `json:"mean_connect_ms"`
	MeanAuthMs    float64 `json:"mean_authenticate_ms"`
	// Transactions holds the mean of every tsung transaction (tr_NAME) in ms:
	// one per acknowledged step of the scenario, to see where the time goes.
	Transactions map[string]float64 `json:"transactions_ms,omitempty"`
	Finished     int64              `json:"finished_users"`
	Errors       map[string]int     `json:"errors,omitempty"`
	LogDir       string             `json:"log_dir"`
}

// runTsung runs bench/tsung/xmpp.xml against s with tsung pinned to the client CPU
// and reads the request statistics tsung wrote. epmd, which tsung's Erlang node
// starts if none runs, is stopped afterwards by PID if it was not running before.
func runTsung(ctx context.Context, log *slog.Logger, s *servers.Server, p *params) (tsungResult, error) {
	r := tsungResult{Users: p.TsungUsers, Seconds: int(p.TsungDuration.Seconds())}
	if _, err := exec.LookPath("tsung"); err != nil {
		return r, fmt.Errorf("tsung not installed (build/setup.sh bench): %w", err)
	}
	dir, err := os.MkdirTemp("", "xbench-tsung-")
	if err != nil {
		return r, fmt.Errorf("tsung dir: %w", err)
	}
	if !p.Keep {
		defer os.RemoveAll(dir)
	}
	r.LogDir = dir
	port := s.Addr[strings.LastIndexByte(s.Addr, ':')+1:]
	rate := max(1, p.TsungUsers/max(1, r.Seconds))
	msgs := 5
	vars := map[string]string{"PORT": port, "DOMAIN": s.Domain(), "USERMAX": strconv.Itoa(p.TsungUsers),
		"SECONDS": strconv.Itoa(r.Seconds), "MAXSECONDS": strconv.Itoa(r.Seconds + msgs + 30),
		"RATE": strconv.Itoa(rate), "MESSAGES": strconv.Itoa(msgs)}
	cfg := filepath.Join(dir, "xmpp.xml")
	if err := os.WriteFile(cfg, []byte(bench.Fill(bench.TsungXML, vars)), 0o644); err != nil {
		return r, fmt.Errorf("tsung config: %w", err)
	}
	epmdBefore := pidsOf("epmd")
	defer func() {
		for pid := range pidsOf("epmd") {
			if !epmdBefore[pid] {
				log.Info("stopping the epmd tsung started", "pid", pid)
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, p.TsungDuration+time.Duration(msgs+60)*time.Second)
	defer cancel()
	cmd := exec.Command("/usr/bin/taskset", "-c", strconv.Itoa(p.ClientCPU), "tsung", "-n", "-f", cfg, "-l", dir, "-w", "0", "start")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "ERL_EPMD_ADDRESS=127.0.0.1")
	out, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		return r, fmt.Errorf("tsung console: %w", err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("tsung start: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	log.Info("tsung started", "pid", cmd.Process.Pid, "users", p.TsungUsers, "rate", rate)
	select {
	case err = <-done:
	case <-tctx.Done():
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = fmt.Errorf("tsung did not finish in time: %w", tctx.Err())
	}
	// tsung's Erlang node may outlive the script by a moment; it is in our group.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil {
		return r, fmt.Errorf("tsung: %w", err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "tsung.log"))
	if len(logs) == 0 {
		b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
		return r, fmt.Errorf("tsung wrote no tsung.log: %s", tail(b))
	}
	if err := parseTsungLog(logs[0], &r); err != nil {
		return r, err
	}
	log.Info("tsung", "server", s.Name(), "requests", r.Requests, "mean_request_ms", fmt.Sprintf("%.2f", r.MeanRequestMs),
		"finished_users", r.Finished, "errors", r.Errors)
	if r.Requests == 0 {
		return r, errors.New("tsung made no request")
	}
	return r, nil
}

func tail(b []byte) string {
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return strings.TrimSpace(string(b))
}

// parseTsungLog folds the periodic "stats:" dumps: sample lines are
// "stats: NAME count mean stddev max min meanfb countfb" (per interval), counter
// lines "stats: NAME count total".
func parseTsungLog(path string, r *tsungResult) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("tsung log: %w", err)
	}
	defer f.Close()
	type acc struct{ n, sum float64 }
	samples := map[string]*acc{}
	r.Errors = map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 || fl[0] != "stats:" {
			continue
		}
		name := fl[1]
		n, _ := strconv.ParseFloat(fl[2], 64)
		switch {
		case len(fl) >= 9: // sample
			mean, _ := strconv.ParseFloat(fl[3], 64)
			a := samples[name]
			if a == nil {
				a = &acc{}
				samples[name] = a
			}
			a.n += n
			a.sum += n * mean
		case strings.HasPrefix(name, "error_"):
			total, _ := strconv.Atoi(fl[3])
			r.Errors[name] = total
		case name == "finish_users_count":
			total, _ := strconv.ParseInt(fl[3], 10, 64)
			r.Finished = total
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tsung log: %w", err)
	}
	mean := func(k string) float64 {
		if a := samples[k]; a != nil && a.n > 0 {
			return a.sum / a.n
		}
		return 0
	}
	if a := samples["request"]; a != nil {
		r.Requests = int64(a.n)
	}
	r.MeanRequestMs = mean("request")
	r.MeanConnectMs = mean("connect")
	r.MeanAuthMs = mean("tr_authenticate")
	r.Transactions = map[string]float64{}
	for k := range samples {
		if name, ok := strings.CutPrefix(k, "tr_"); ok {
			r.Transactions[name] = mean(k)
		}
	}
	return nil
}

// pidsOf returns the PIDs whose comm is name.
func pidsOf(name string) map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(b)) == name {
			out[pid] = true
		}
	}
	return out
}
