// Command storage benchmarks the raft-replicated store (storage/replicated):
// commits per second and commit latency (p50/p99) of storage.Store.Apply with
// 3 voters on loopback, for three backends:
//
//	-backend file   each node's raft log on a file BlockDevice (fdatasync)
//	-backend ram    no device: RAM-only raft stores (degraded-ram cluster)
//	-backend iscsi  each node's raft log on its own LUN of a tgtd started here
//	                (root, Debian package tgt), through the userspace initiator
//
// Clients are spread round-robin over the nodes, so most writes are forwarded
// to the leader as in production. Results are printed and, with -out, written
// as JSON (bench/storage/results/).
//
//	go run ./bench/storage -backend file -clients 1,16 -duration 3s -out bench/storage/results/file.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"xedge/iscsi"
	"xedge/iscsi/tgt"
	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/replicated"
)

// Result is one benchmark case.
type Result struct {
	Backend   string  `json:"backend"`
	Nodes     int     `json:"nodes"`
	Voters    int     `json:"voters"`
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Commits   int     `json:"commits"`
	PerSecond float64 `json:"commits_per_second"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Errors    int     `json:"errors"`
	ValueSize int     `json:"value_bytes"`
}

// Report is the JSON file.
type Report struct {
	Date    string   `json:"date"`
	Host    string   `json:"host"`
	CPUs    int      `json:"cpus"`
	Go      string   `json:"go"`
	Note    string   `json:"note"`
	Results []Result `json:"results"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/storage:", err)
		os.Exit(1)
	}
}

func run() error {
	backend := flag.String("backend", "file", "file, ram or iscsi")
	nodes := flag.Int("nodes", 3, "nodes (voters: 3, or 5 with 5+ nodes)")
	clients := flag.String("clients", "1,16", "comma-separated client counts")
	duration := flag.Duration("duration", 3*time.Second, "measuring time per case")
	valueSize := flag.Int("value", 128, "value size in bytes")
	out := flag.String("out", "", "write JSON results here")
	dir := flag.String("dir", "", "parent of the fresh directory for device files (default: $TMPDIR)")
	note := flag.String("note", "", "free text stored in the JSON")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	commitTimeout := flag.Duration("commit-timeout", 0, "raft CommitTimeout (0: the store's default)")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var counts []int
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -clients %q", *clients)
		}
		counts = append(counts, n)
	}
	// Always a fresh directory (inside -dir if given): devices left over from
	// an earlier run would hold another cluster's raft state.
	d, err := os.MkdirTemp(*dir, "xedge-bench-storage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(d)
	*dir = d
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	devs, cleanup, err := devices(ctx, *backend, *nodes, *dir)
	if err != nil {
		return err
	}
	defer cleanup()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	key := []byte("benchmark cluster key, 32 bytes!")
	var stores []*replicated.Store
	defer func() {
		for _, s := range stores {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.Stop(sctx)
			c()
		}
	}()
	for i := 0; i < *nodes; i++ {
		cfg := replicated.Config{
			NodeName:    fmt.Sprintf("bench%d", i+1),
			ClusterAddr: fmt.Sprintf("127.0.0.%d:0", 20+i),
			DataDir:     filepath.Join(*dir, fmt.Sprintf("node%d", i+1)),
			Device:      devs[i],
			ClusterKey:  key,
			Logger:      log,
			// Production timings, except faster membership reports so the
			// voter set settles quickly.
			ReportInterval: 100 * time.Millisecond,
			CommitTimeout:  *commitTimeout,
		}
		if i > 0 {
			cfg.Join = []string{stores[0].Addr()}
		}
		s, err := replicated.New(cfg)
		if err != nil {
			return err
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		stores = append(stores, s)
	}
	wantVoters := 3
	if *nodes >= 5 {
		wantVoters = 5
	}
	wantVoters = min(wantVoters, *nodes)
	if err := waitVoters(ctx, stores, wantVoters); err != nil {
		return err
	}
	if err := stores[0].Declare(ctx, storage.TableSpec{Name: "bench", Copy: storage.Disc}); err != nil {
		return err
	}
	for _, s := range stores { // every node has applied the Declare
		for range 500 {
			if _, err := s.Durable("bench"); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	rep := Report{Date: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(), Note: *note}
	rep.Host, _ = os.Hostname()
	for _, c := range counts {
		r := measure(ctx, stores, c, *duration, *valueSize)
		r.Backend, r.Nodes, r.Voters = *backend, *nodes, wantVoters
		fmt.Printf("%-6s nodes=%d voters=%d clients=%-3d commits/s=%8.0f p50=%6.2fms p99=%6.2fms errors=%d\n",
			r.Backend, r.Nodes, r.Voters, r.Clients, r.PerSecond, r.P50ms, r.P99ms, r.Errors)
		rep.Results = append(rep.Results, r)
	}
	st := stores[0].Status()
	fmt.Printf("node 1: mode=%s role=%s generation=%d\n", st.Mode, st.Role, st.Generation)
	if *out != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func waitVoters(ctx context.Context, stores []*replicated.Store, want int) error {
	for range 600 {
		voters := 0
		for _, s := range stores {
			if s.Status().Role == "voter" {
				voters++
			}
		}
		if voters == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("the voter set did not settle in 30s")
}

func measure(ctx context.Context, stores []*replicated.Store, clients int, d time.Duration, size int) Result {
	value := make([]byte, size)
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[c%len(stores)]
			var mine []time.Duration
			bad := 0
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				err := s.Apply(ctx, storage.Put("bench", fmt.Sprintf("c%03d-%08d", c, i%10000), value))
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	return Result{Clients: clients, Seconds: elapsed, Commits: len(lat), PerSecond: float64(len(lat)) / elapsed,
		P50ms: pct(0.50), P99ms: pct(0.99), Errors: errs, ValueSize: size}
}

// devices returns one BlockDevice per node (nil entries for ram).
func devices(ctx context.Context, backend string, n int, dir string) ([]storage.BlockDevice, func(), error) {
	devs := make([]storage.BlockDevice, n)
	var closers []func()
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	switch backend {
	case "ram":
	case "file":
		for i := range devs {
			f, err := blockdev.OpenFile(filepath.Join(dir, fmt.Sprintf("dev%d.img", i+1)), 256<<20)
			if err != nil {
				cleanup()
				return nil, nil, err
			}
			devs[i] = f
			closers = append(closers, func() { f.Close() })
		}
	case "iscsi":
		if err := tgt.Available(); err != nil {
			return nil, nil, err
		}
		logf, err := os.Create(filepath.Join(dir, "tgtd.log"))
		if err != nil {
			return nil, nil, err
		}
		d, err := tgt.Start(ctx, tgt.Options{Log: logf})
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, d.Stop, func() { logf.Close() })
		for i := range devs {
			img := filepath.Join(dir, fmt.Sprintf("lun%d.img", i+1))
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				cleanup()
				return nil, nil, err
			}
			if err := os.Truncate(img, 256<<20); err != nil {
				cleanup()
				return nil, nil, err
			}
			iqn := fmt.Sprintf("iqn.2025-01.org.xedge.bench:node%d", i+1)
			if err := d.AddTarget(i+1, iqn, map[int]string{1: img}); err != nil {
				cleanup()
				return nil, nil, err
			}
			dev, err := iscsi.Dial(ctx, iscsi.Config{Portal: d.Portal, Target: iqn, LUN: 1,
				Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
			if err != nil {
				cleanup()
				return nil, nil, fmt.Errorf("iscsi login to %s: %w", iqn, err)
			}
			devs[i] = dev
			closers = append(closers, func() { dev.Close() })
		}
	default:
		return nil, nil, fmt.Errorf("unknown -backend %q (file, ram, iscsi)", backend)
	}
	return devs, cleanup, nil
}
