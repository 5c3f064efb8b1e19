// Command bench runs xedge's side-by-side benchmark: it starts xmppd, ejabberd and
// Prosody one after the other as child processes pinned to one CPU (taskset;
// GOMAXPROCS=2 for xmppd on its one CPU), pins itself (the Go load generator) to the other CPU,
// provisions the same users and rosters on each over XMPP, runs the same workloads
// (idle-session memory with and without TLS, logins/s, one-to-one chat throughput
// and latency, presence fan-out, group-chat fan-out in a 200-occupant room, MAM
// queries on a 100k-message archive, a tsung scenario), and writes
// bench/results/<date>.json, a Markdown table and a PNG chart.
//
// Every phase has a deadline, traffic stays on loopback, and every process it
// started is stopped by PID on exit or on SIGINT/SIGTERM.
//
// Usage: go run ./bench/cmd/bench [--quick] [--servers xmppd,ejabberd,prosody]
// [--workloads memory,logins,chat,fanout,muc,mam,tsung] [--out bench/results]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"xedge/bench/loadgen"
	"xedge/bench/report"
	"xedge/bench/servers"
	"xedge/bench/workload"
)

// lastJSON is the results file of the last run (for tests).
var lastJSON string

type params struct {
	Servers       []string      `json:"servers"`
	Workloads     []string      `json:"workloads"`
	Quick         bool          `json:"quick"`
	Sessions      int           `json:"sessions"`
	MemUsers      int           `json:"memory_users"`
	LoginWorkers  int           `json:"login_workers"`
	LoginDuration time.Duration `json:"login_duration_ns"`
	Pairs         int           `json:"pairs"`
	ChatDuration  time.Duration `json:"chat_duration_ns"`
	FanoutUsers   int           `json:"fanout_users"`
	Contacts      int           `json:"contacts"`
	TsungUsers    int           `json:"tsung_users"`
	TsungDuration time.Duration `json:"tsung_duration_ns"`
	ServerCPU     int           `json:"server_cpu"`
	ClientCPU     int           `json:"client_cpu"`
	Settle        time.Duration `json:"settle_ns"`
	XmppdBin      string        `json:"-"`
	XmppdGOGC     string        `json:"xmppd_gogc,omitempty"`
	XmppdProcs    int           `json:"xmppd_gomaxprocs"`
	Out           string        `json:"-"`
	Keep          bool          `json:"-"`
	Timeout       time.Duration `json:"-"`
	Profile       string        `json:"-"`
	GenProfile    string        `json:"-"`
	Nice          int           `json:"nice"`
	TLSGroups     string        `json:"tls_groups"`
	MUCOccupants  int           `json:"muc_occupants"`
	MUCSenders    int           `json:"muc_senders"`
	MUCWindow     int           `json:"muc_window"`
	MUCDuration   time.Duration `json:"muc_duration_ns"`
	MAMArchive    int           `json:"mam_archive"`
	MAMPeers      int           `json:"mam_peers"`
	MAMQueries    int           `json:"mam_queries"`
	LockWait      time.Duration `json:"-"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		slog.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var p params
	var srv, wl string
	flag := flag.NewFlagSet("bench", flag.ContinueOnError)
	flag.StringVar(&srv, "servers", "xmppd,ejabberd,prosody", "servers to benchmark, comma-separated")
	flag.StringVar(&wl, "workloads", "memory,logins,chat,fanout,muc,mam,tsung", "workloads, comma-separated")
	flag.BoolVar(&p.Quick, "quick", false, "short smoke run (~3 min): 500 sessions, 20 pairs, 200 fan-out users, short phases")
	flag.IntVar(&p.Sessions, "sessions", 0, "idle sessions for the memory workload (default 10000, quick 500)")
	flag.IntVar(&p.MemUsers, "memory-users", 2000, "accounts the idle sessions are spread over (sessions/accounts resources each)")
	flag.IntVar(&p.LoginWorkers, "login-workers", 50, "concurrent clients in the login workload")
	flag.DurationVar(&p.LoginDuration, "login-duration", 0, "login workload duration (default 10s, quick 3s)")
	flag.IntVar(&p.Pairs, "pairs", 0, "chat pairs (default 100, quick 20)")
	flag.DurationVar(&p.ChatDuration, "chat-duration", 0, "each chat measurement's duration (default 10s, quick 3s)")
	flag.IntVar(&p.FanoutUsers, "fanout-users", 0, "users in the presence fan-out (default 1000, quick 200)")
	flag.IntVar(&p.Contacts, "contacts", 20, "contacts per user in the presence fan-out")
	flag.IntVar(&p.MUCOccupants, "muc-occupants", 200, "occupants of the group-chat fan-out room")
	flag.IntVar(&p.MUCSenders, "muc-senders", 20, "occupants sending in the group-chat fan-out")
	flag.IntVar(&p.MUCWindow, "muc-window", 2, "group-chat messages each sender keeps in flight")
	flag.DurationVar(&p.MUCDuration, "muc-duration", 0, "group-chat fan-out measurement (default 10s, quick 3s)")
	flag.IntVar(&p.MAMArchive, "mam-archive", 100000, "messages in the archive the MAM queries read")
	flag.IntVar(&p.MAMPeers, "mam-peers", 10, "peers the archive's messages go to (a with= query selects one)")
	flag.IntVar(&p.MAMQueries, "mam-queries", 0, "MAM queries of each kind (default 1000, quick 50; each kind stops after 60 s)")
	flag.IntVar(&p.TsungUsers, "tsung-users", 0, "tsung users (default 500, quick 100)")
	flag.DurationVar(&p.TsungDuration, "tsung-duration", 0, "tsung arrival phase (default 30s, quick 10s)")
	flag.IntVar(&p.ServerCPU, "server-cpu", 0, "CPU the servers are pinned to")
	flag.IntVar(&p.ClientCPU, "client-cpu", 1, "CPU the load generator is pinned to")
	flag.DurationVar(&p.Settle, "settle", 0, "pause before reading RSS (default 5s, quick 2s)")
	flag.StringVar(&p.XmppdBin, "xmppd", "bin/xmppd", "xmppd binary (make build)")
	flag.StringVar(&p.XmppdGOGC, "xmppd-gogc", "", "GOGC for xmppd (empty: its default, 100 with its 128 MiB heap floor)")
	flag.IntVar(&p.XmppdProcs, "xmppd-gomaxprocs", 0, "GOMAXPROCS for xmppd, which stays pinned to the one CPU --server-cpu (0: unset, the runtime's choice: 1 on that one CPU; docs/bench.md)")
	flag.StringVar(&p.Out, "out", "bench/results", "directory for results (JSON, Markdown, PNG)")
	flag.BoolVar(&p.Keep, "keep", false, "keep the servers' temporary directories")
	flag.DurationVar(&p.Timeout, "timeout", 0, "bound on the whole run (default 30m, quick 8m)")
	flag.IntVar(&p.Nice, "nice", 0, "nice value for the generator and the servers (inherited); negative values need root and shield the figures from other load on a shared machine (sets the session's scheduler autogroup too, restored at exit)")
	flag.DurationVar(&p.LockWait, "lock-wait", 20*time.Minute, "how long to wait for another benchmark run on this machine to finish (runs take "+lockPath+")")
	flag.StringVar(&p.TLSGroups, "tls-groups", "default", "key exchanges the load client offers: default (Go's: X25519MLKEM768, X25519, P-256, ...) or x25519 (the same classic exchange on every server; ejabberd and Prosody on OpenSSL 3.0 never negotiate ML-KEM)")
	flag.StringVar(&p.Profile, "profile", "", "directory: record `perf` CPU profiles of xmppd during each workload")
	flag.StringVar(&p.GenProfile, "gen-profile", "", "directory: record pprof CPU profiles of the load generator itself during each workload (gen-<server>-<workload>.pprof)")
	if err := flag.Parse(args); err != nil {
		return fmt.Errorf("flags: %w", err)
	}
	p.Servers = split(srv)
	p.Workloads = split(wl)
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = pick(p.Quick, quick, full)
		}
	}
	defd := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = pick(p.Quick, quick, full)
		}
	}
	def(&p.Sessions, 10000, 500)
	def(&p.Pairs, 100, 20)
	def(&p.FanoutUsers, 1000, 200)
	def(&p.TsungUsers, 500, 100)
	def(&p.MAMQueries, 1000, 50)
	defd(&p.MUCDuration, 10*time.Second, 3*time.Second)
	defd(&p.LoginDuration, 10*time.Second, 3*time.Second)
	defd(&p.ChatDuration, 10*time.Second, 3*time.Second)
	defd(&p.TsungDuration, 30*time.Second, 10*time.Second)
	defd(&p.Settle, 5*time.Second, 2*time.Second)
	defd(&p.Timeout, 30*time.Minute, 8*time.Minute)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)

	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := loadgen.SetTLSGroups(p.TLSGroups); err != nil {
		return fmt.Errorf("--tls-groups: %w", err)
	}
	// The lock wait is bounded by --lock-wait alone; --timeout bounds the run
	// itself and starts once the lock is ours.
	unlock, err := acquireRunLock(sigCtx, p.LockWait, log)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(sigCtx, p.Timeout)
	defer cancel()

	if err := raiseNofile(); err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	}
	if p.Nice != 0 {
		if err := niceSelf(p.Nice); err != nil {
			log.Warn("could not set the nice value", "nice", p.Nice, "err", err)
		}
		restore, err := niceAutogroup(p.Nice)
		if err != nil {
			log.Warn("could not set the autogroup nice value", "nice", p.Nice, "err", err)
		}
		defer restore()
	}
	if err := pinSelf(p.ClientCPU); err != nil {
		log.Warn("could not pin the load generator", "cpu", p.ClientCPU, "err", err)
	}
	runtime.GOMAXPROCS(1)

	run := &report.Run{
		Started: time.Now().UTC(), Quick: p.Quick, Params: map[string]any{},
		Host:        hostInfo(),
		CommandLine: "go run ./bench/cmd/bench " + strings.Join(args, " "),
	}
	run.LoadAvg[0] = loadavg()
	run.QuietHost = quiet(run.LoadAvg[0])
	b, _ := jsonMap(p)
	run.Params = b
	if !run.QuietHost {
		run.Notes = append(run.Notes, "the machine was busy (load average "+run.LoadAvg[0]+" at start, 2 cores shared with other work): figures are noisy; compare ratios from the same run, not absolute values across runs")
	}

	for _, name := range p.Servers {
		if ctx.Err() != nil {
			break
		}
		res := benchServer(ctx, log, &p, name)
		run.Servers = append(run.Servers, res)
		run.Notes = append(run.Notes, generatorBound(res)...)
	}
	run.Notes = append(run.Notes, coreSpeedNotes(run.Servers)...)
	run.LoadAvg[1] = loadavg()
	run.Seconds = time.Since(run.Started).Seconds()
	run.Compute()

	if err := os.MkdirAll(p.Out, 0o755); err != nil {
		return fmt.Errorf("results dir: %w", err)
	}
	stamp := run.Started.Format("2006-01-02T15-04Z")
	if p.Quick {
		stamp += "-quick"
	}
	jsonPath := filepath.Join(p.Out, stamp+".json")
	if err := run.WriteJSON(jsonPath); err != nil {
		return err
	}
	md := run.Markdown()
	if err := os.WriteFile(filepath.Join(p.Out, stamp+".md"), []byte(md), 0o644); err != nil {
		return fmt.Errorf("results table: %w", err)
	}
	pngPath := filepath.Join(p.Out, stamp+".png")
	if err := plot(ctx, jsonPath, pngPath); err != nil {
		log.Warn("no chart", "err", err)
	}
	fmt.Println(md)
	fmt.Printf("results: %s\n", jsonPath)
	lastJSON = jsonPath
	if ctx.Err() != nil {
		return fmt.Errorf("run cut short: %w", context.Cause(ctx))
	}
	return nil
}

func pick[T any](quick bool, q, f T) T {
	if quick {
		return q
	}
	return f
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// benchServer runs every selected workload against one server.
func benchServer(ctx context.Context, log *slog.Logger, p *params, name string) *report.Server {
	res := &report.Server{Name: name, Figures: map[string]float64{}, Details: map[string]any{}, Errors: map[string]string{}}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	res.Version = version(name, p.XmppdBin)
	if name == servers.Xmppd {
		if _, err := os.Stat(p.XmppdBin); err != nil {
			res.Errors["start"] = fmt.Sprintf("xmppd binary %s: %v (run make build)", p.XmppdBin, err)
			log.Warn("skipping xmppd", "err", res.Errors["start"])
			return res
		}
	}
	s, err := servers.New(servers.Config{Kind: name, CPU: p.ServerCPU, XmppdBin: p.XmppdBin, XmppdGOGC: p.XmppdGOGC, XmppdProcs: p.XmppdProcs, Log: log})
	if err != nil {
		res.Errors["start"] = err.Error()
		return res
	}
	defer func() {
		if err := s.Remove(p.Keep); err != nil {
			log.Warn("stopping server", "server", name, "err", err)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = s.Start(sctx)
	cancel()
	if err != nil {
		res.Errors["start"] = err.Error()
		log.Error("server did not start", "server", name, "err", err)
		return res
	}
	t := &workload.Target{Name: name, Addr: s.Addr, Domain: s.Domain(), RSS: s.RSS, CPU: s.CPUTime, PID: s.PID, ServerCPU: p.ServerCPU, ClientCPU: p.ClientCPU, Restart: s.Restart, Log: log}
	certPEM, err := s.CertPEM()
	if err == nil {
		t.Verifier, err = loadgen.NewVerifier(certPEM, s.Domain())
	}
	if err != nil {
		res.Errors["start"] = err.Error()
		return res
	}
	defer func() {
		res.Details["tls_verification"] = map[string]int64{"full": t.Verifier.FullVerifications(), "pinned_or_full_accepted": t.Verifier.Accepted()}
	}()
	if name == servers.Prosody {
		// Prosody 0.12 rewrites a user's whole roster file on every change: the
		// 20,000 subscription handshakes of the full fan-out take > 9 minutes, so
		// its rosters are written to its storage directly (then verified over XMPP).
		t.WriteRosters = func(_ context.Context, r workload.Rosters) error { return s.WriteRosters(r) }
	}
	if s.CanWriteArchive() {
		// ejabberd and Prosody keep archives in SQLite (a transaction per
		// message: ejabberd archives 25-100 messages/s here): the MAM
		// workload's 100,000 are written to their databases.
		t.WriteArchive = s.WriteArchive
	}

	// Registration is the slow part of provisioning (ejabberd hashes SCRAM keys at
	// ~50 accounts/s here), so at most MemUsers accounts carry the idle sessions.
	memUsers := min(p.Sessions, p.MemUsers)
	pool := max(memUsers, 2*p.Pairs, p.TsungUsers+1, p.LoginWorkers*10)
	if err := phase(ctx, 10*time.Minute, func(ctx context.Context) error {
		return workload.Register(ctx, t, "u", pool)
	}); err != nil {
		res.Errors["provision"] = err.Error()
		log.Error("provisioning failed", "server", name, "err", err)
		return res
	}
	prof := newProfiler(p.Profile, p.GenProfile, name, s.PID, log)

	if has(p.Workloads, "memory") {
		for _, tls := range []bool{false, true} {
			key := "mem_kb_session_plain"
			if tls {
				key = "mem_kb_session_tls"
			}
			err := phase(ctx, 8*time.Minute, func(ctx context.Context) error {
				// Not profiled: the workload restarts the server (a new PID).
				r, err := workload.IdleMemory(ctx, t, "u", p.Sessions, memUsers, tls, p.Settle)
				res.Details[key] = r
				if err == nil {
					res.Figures[key] = r.BytesPerSession / 1024
				}
				return err
			})
			record(res, key, err, log)
		}
		// Start the next workloads on a fresh process too.
		if err := phase(ctx, 2*time.Minute, s.Restart); err != nil {
			res.Errors["restart"] = err.Error()
			return res
		}
	}
	if has(p.Workloads, "logins") {
		err := phase(ctx, p.LoginDuration+2*time.Minute, func(ctx context.Context) error {
			defer prof.start("logins")()
			r, err := workload.Logins(ctx, t, "u", pool, p.LoginWorkers, p.LoginDuration)
			res.Details["logins"] = r
			if err == nil {
				res.Figures["logins_per_s"] = r.PerSecond
			}
			return err
		})
		record(res, "logins", err, log)
	}
	if has(p.Workloads, "chat") {
		err := phase(ctx, p.ChatDuration+3*time.Minute, func(ctx context.Context) error {
			defer prof.start("chat-window10")()
			r, err := workload.Chat(ctx, t, "u", p.Pairs, 10, p.ChatDuration)
			res.Details["chat_window10"] = r
			if err == nil {
				res.Figures["msgs_per_s"] = r.PerSecond
			}
			return err
		})
		record(res, "chat_window10", err, log)
		err = phase(ctx, p.ChatDuration+3*time.Minute, func(ctx context.Context) error {
			defer prof.start("chat-window1")()
			r, err := workload.Chat(ctx, t, "u", p.Pairs, 1, p.ChatDuration)
			res.Details["chat_window1"] = r
			if err == nil {
				res.Figures["p50_ms"] = r.P50Ms
				res.Figures["p99_ms"] = r.P99Ms
			}
			return err
		})
		record(res, "chat_window1", err, log)
	}
	if has(p.Workloads, "fanout") {
		err := phase(ctx, 13*time.Minute, func(ctx context.Context) error {
			if err := workload.Register(ctx, t, "f", p.FanoutUsers); err != nil {
				return fmt.Errorf("register: %w", err)
			}
			if err := workload.ProvisionRosters(ctx, t, "f", p.FanoutUsers, p.Contacts, 9*time.Minute); err != nil {
				return fmt.Errorf("rosters: %w", err)
			}
			defer prof.start("fanout")()
			r, err := workload.Fanout(ctx, t, "f", p.FanoutUsers, p.Contacts, 3*time.Minute)
			res.Details["fanout"] = r
			if err == nil {
				res.Figures["fanout_s"] = r.Seconds
				res.Figures["fanout_per_s"] = r.PerSecond
			}
			return err
		})
		record(res, "fanout", err, log)
	}
	if has(p.Workloads, "muc") {
		err := phase(ctx, p.MUCDuration+8*time.Minute, func(ctx context.Context) error {
			res.Details["quiet_before_muc_seconds"] = quiesce(ctx, s, log)
			if err := workload.Register(ctx, t, "m", p.MUCOccupants); err != nil {
				return fmt.Errorf("register: %w", err)
			}
			defer prof.start("muc")()
			r, err := workload.MUC(ctx, t, "m", p.MUCOccupants, min(p.MUCSenders, p.MUCOccupants), p.MUCWindow, p.MUCDuration)
			res.Details["muc"] = r
			if err == nil {
				res.Figures["muc_per_s"] = r.PerSecond
				res.Figures["muc_p99_ms"] = r.LatP99Ms
				res.Figures["muc_p99_read_ms"] = r.ReadP99Ms
			}
			return err
		})
		record(res, "muc", err, log)
	}
	if has(p.Workloads, "mam") {
		err := phase(ctx, 20*time.Minute, func(ctx context.Context) error {
			res.Details["quiet_before_mam_seconds"] = quiesce(ctx, s, log)
			if err := workload.Register(ctx, t, "q", p.MAMPeers+1); err != nil {
				return fmt.Errorf("register: %w", err)
			}
			defer prof.start("mam")()
			r, err := workload.MAMQuery(ctx, t, "q", p.MAMArchive, p.MAMPeers, 50, 50, p.MAMQueries, time.Minute)
			res.Details["mam"] = r
			if err == nil {
				res.Figures["mam_p50_ms"] = r.All.P50Ms
				res.Figures["mam_p99_ms"] = r.All.P99Ms
				res.Figures["mam_with_p50_ms"] = r.With.P50Ms
				res.Figures["mam_with_p99_ms"] = r.With.P99Ms
			}
			return err
		})
		record(res, "mam", err, log)
	}
	if has(p.Workloads, "tsung") {
		err := phase(ctx, p.TsungDuration+3*time.Minute, func(ctx context.Context) error {
			r, err := runTsung(ctx, log, s, p)
			res.Details["tsung"] = r
			if err == nil && r.MeanRequestMs > 0 {
				res.Figures["tsung_req_ms"] = r.MeanRequestMs
			}
			return err
		})
		record(res, "tsung", err, log)
	}
	return res
}

// quiesce waits (at most 30 s) until the server has used less than 10% of a
// core for half a second, and returns how long it waited: work a workload left
// behind (the MUC room's 200 leaves, each a write to xmppd's replicated tables,
// still syncing) must not land in the next workload's timings. The same for
// every server.
func quiesce(ctx context.Context, s *servers.Server, log *slog.Logger) float64 {
	start := time.Now()
	prev, err := s.CPUTime()
	if err != nil {
		return 0
	}
	for range 60 {
		select {
		case <-ctx.Done():
			return time.Since(start).Seconds()
		case <-time.After(500 * time.Millisecond):
		}
		c, err := s.CPUTime()
		if err != nil {
			break
		}
		if c-prev < 0.05 {
			break
		}
		prev = c
	}
	waited := time.Since(start).Seconds()
	log.Info("server quiet", "waited", time.Since(start).Round(time.Millisecond))
	return waited
}

func record(res *report.Server, key string, err error, log *slog.Logger) {
	if err != nil {
		res.Errors[key] = err.Error()
		log.Error("workload failed", "server", res.Name, "workload", key, "err", err)
	}
}

// phase runs fn with its own deadline.
func phase(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := fn(ctx)
	if err == nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
		err = ctx.Err()
	}
	return err
}

func version(name, xmppdBin string) string {
	pkg := map[string]string{servers.Ejabberd: "ejabberd", servers.Prosody: "prosody"}[name]
	if pkg != "" {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
		return "unknown"
	}
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err == nil {
		return "git " + strings.TrimSpace(string(out))
	}
	return "unknown"
}

func raiseNofile() error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}

// pinSelf pins every thread of this process to cpu; threads created later inherit
// the mask of the thread that creates them.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("sched_setaffinity %d: %w", tid, err)
		}
	}
	return nil
}

// niceSelf sets the nice value of every thread of this process (nice is per
// thread on Linux); threads and children created later inherit it.
func niceSelf(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("threads: %w", err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil {
			return fmt.Errorf("setpriority %d: %w", tid, err)
		}
	}
	return nil
}

// niceAutogroup sets the nice value of this session's scheduler autogroup and
// returns the function restoring the old one. With autogroups enabled (Debian's
// default) per-process nice only orders processes within a session; sessions share
// the CPUs equally, so without this a nice value does nothing against other
// sessions' load.
func niceAutogroup(n int) (func(), error) {
	const path = "/proc/self/autogroup"
	b, err := os.ReadFile(path)
	if err != nil {
		return func() {}, fmt.Errorf("autogroup: %w", err)
	}
	// "/autogroup-24 nice 0"
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return func() {}, fmt.Errorf("autogroup: unexpected %q", b)
	}
	old := f[2]
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0); err != nil {
		return func() {}, fmt.Errorf("autogroup: %w", err)
	}
	return func() { _ = os.WriteFile(path, []byte(old), 0) }, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func quiet(la string) bool {
	f := strings.Fields(la)
	if len(f) == 0 {
		return false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return err == nil && v < 0.5
}

func hostInfo() map[string]string {
	h := map[string]string{"go": runtime.Version(), "cpus": strconv.Itoa(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				h["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		h["debian"] = strings.TrimSpace(string(b))
	}
	return h
}

func plot(ctx context.Context, jsonPath, pngPath string) error {
	script := "bench/plot.py"
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("plot script: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", script, jsonPath, pngPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("plot: %w: %s", err, out)
	}
	return nil
}

// generatorBound notes the throughput figures of res that the load generator,
// not the server, limited: the generator used ≥ 0.9 of its one core while the
// server had CPU to spare. Such a figure is a lower bound of the server's rate.
// coreSpeedNotes says when the server CPU was not equally fast for every
// server during its MUC latency phase (the same work took over 15% longer for
// one than for another, measured right before and after each phase): the
// muc_p99_ms ratios then carry the host's difference as well as the servers'.
func coreSpeedNotes(servers []*report.Server) []string {
	var parts []string
	lo, hi := math.Inf(1), 0.0
	for _, res := range servers {
		r, ok := res.Details["muc"].(workload.MUCResult)
		if !ok || r.LatCoreBeforeUs <= 0 || r.LatCoreAfterUs <= 0 {
			continue
		}
		avg := (r.LatCoreBeforeUs + r.LatCoreAfterUs) / 2
		lo, hi = min(lo, avg), max(hi, avg)
		parts = append(parts, fmt.Sprintf("%s %.0f/%.0f", res.Name, r.LatCoreBeforeUs, r.LatCoreAfterUs))
	}
	if len(parts) < 2 || hi <= 1.15*lo {
		return nil
	}
	return []string{fmt.Sprintf("the server CPU was not as fast for every server's MUC latency phase (µs for the same work right before/after it: %s): the muc_p99_ms ratios carry that difference", strings.Join(parts, ", "))}
}

func generatorBound(res *report.Server) []string {
	var notes []string
	check := func(figure string, client, server float64) {
		if client >= 0.9 && server < 0.9 {
			notes = append(notes, fmt.Sprintf("%s %s is generator-bound: the load generator used %.2f of its core, the server %.2f of its own; the figure is a lower bound of %s's capacity", res.Name, figure, client, server, res.Name))
		}
	}
	if r, ok := res.Details["logins"].(workload.LoginResult); ok {
		check("logins_per_s", r.ClientCPU, r.ServerCPU)
	}
	if r, ok := res.Details["chat_window10"].(workload.ChatResult); ok {
		check("msgs_per_s", r.ClientCPU, r.ServerCPU)
	}
	if r, ok := res.Details["fanout"].(workload.FanoutResult); ok {
		check("fanout_s", r.ClientCPU, r.ServerCPU)
	}
	if r, ok := res.Details["muc"].(workload.MUCResult); ok {
		check("muc_per_s", r.ClientCPU, r.ServerCPU)
	}
	return notes
}
