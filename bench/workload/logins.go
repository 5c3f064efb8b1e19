package workload

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"xedge/bench/loadgen"
)

// LoginResult is the login-rate measurement.
type LoginResult struct {
	Workers    int     `json:"workers"`
	Seconds    float64 `json:"seconds"`
	Logins     int64   `json:"logins"`
	Errors     int64   `json:"errors"`
	PerSecond  float64 `json:"per_second"`
	ServerCPU  float64 `json:"server_cpu"`
	ClientCPU  float64 `json:"client_cpu"` // fraction of one core
	FirstError string  `json:"first_error,omitempty"`
}

// Logins runs `workers` clients in a loop for d: each logs a user from the pool in
// (TCP, stream, STARTTLS, SCRAM-SHA-1, bind, initial presence, ping round trip)
// and closes the stream. Users are spread so no two workers share one. Every user
// logs in once before the measurement (warm-up).
func Logins(ctx context.Context, t *Target, prefix string, pool, workers int, d time.Duration) (LoginResult, error) {
	r := LoginResult{Workers: workers}
	if pool < workers {
		return r, fmt.Errorf("user pool %d smaller than %d workers", pool, workers)
	}
	per := pool / workers
	// Warm-up, not measured: every user of the pool logs in once, so the client's
	// SCRAM key cache (see loadgen) holds every user's keys before the clock starts.
	// Without it the first login of each user paid PBKDF2 (4096 SHA-1 rounds,
	// ~0.7 ms) inside the measurement: 2,000 users = ~1.5 s of the generator's core
	// in a 10 s run, and xmppd's figure is generator-bound. The servers' own caches
	// are warmed the same way for all three.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	werr := Parallel(wctx, workers*per, workers, func(ctx context.Context, i int) error {
		u, p := User(prefix, i)
		o := t.opts(true)
		o.Resource = "warm"
		c, err := loadgen.Login(ctx, o, u, p)
		if err != nil {
			return fmt.Errorf("warm-up login %s: %w", u, err)
		}
		_ = c.Close()
		return nil
	})
	wcancel()
	if werr != nil {
		return r, werr
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	deadline := time.Now().Add(d)
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	// The generator keeps its default GC here (unlike the latency workloads): a
	// login's garbage is short-lived, and with GC held off every login would take
	// fresh pages (page faults, cold caches), which costs the generator ~5% more
	// CPU per login (BenchmarkLoginCeiling: 414-430 µs with GC, 439-460 held;
	// docs/bench.md). Logins/s is a throughput figure, not a latency one.
	runtime.GC()
	cpu := startCPU(t)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 10_000_000 && time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				i := w*per + k%per
				u, p := User(prefix, i)
				o := t.opts(true)
				o.Resource = "l" + strconv.Itoa(w)
				c, err := loadgen.Login(ctx, o, u, p)
				if err != nil {
					if bad.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					if bad.Load() > 200 && bad.Load() > ok.Load() {
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				c.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	r.ServerCPU = cpu.share()
	r.ClientCPU = cpu.client()
	r.Seconds, r.Logins, r.Errors = el, ok.Load(), bad.Load()
	r.PerSecond = float64(r.Logins) / el
	if v, _ := firstErr.Load().(string); v != "" {
		r.FirstError = v
	}
	t.Log.Info("logins", "server", t.Name, "per_second", fmt.Sprintf("%.0f", r.PerSecond), "errors", r.Errors, "server_cpu", fmt.Sprintf("%.2f", r.ServerCPU), "client_cpu", fmt.Sprintf("%.2f", r.ClientCPU))
	if r.Logins == 0 {
		return r, fmt.Errorf("no successful login (%s)", r.FirstError)
	}
	return r, nil
}
