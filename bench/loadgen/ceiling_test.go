package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// miniServerEnv makes the test binary run only the mini server (see TestMain):
// the login-ceiling benchmark runs it as a separate process so the benchmark's
// CPU accounting (getrusage of this process) holds the generator's work alone.
const miniServerEnv = "XEDGE_LOADGEN_MINISERVER"

// benchWorkers is the number of concurrent logins (the harness's --login-workers).
var benchWorkers = func() int {
	if n, err := strconv.Atoi(os.Getenv("LOADGEN_BENCH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return 50
}()

// gcHeld: the ceiling benchmark runs with the generator's default GC, as the
// login workload does; LOADGEN_BENCH_GC=held holds it off (HoldGC) for comparison.
var gcHeld = os.Getenv("LOADGEN_BENCH_GC") == "held"

func TestMain(m *testing.M) {
	if mode := os.Getenv(miniServerEnv); mode != "" {
		runtime.GOMAXPROCS(1)
		s, err := startMiniServer("localhost")
		if err != nil {
			fmt.Fprintln(os.Stderr, "mini server:", err)
			os.Exit(1)
		}
		s.fanout = mode == "fanout"
		fmt.Printf("%s\n%sEND\n", s.ln.Addr(), s.certPEM)
		// Serve until the parent closes our stdin (or dies), bounded to 10 minutes.
		done := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
		}
		s.ln.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// miniServerProcess starts the mini server as a child process (this test binary)
// and returns its address and certificate; it is stopped by PID at cleanup.
func miniServerProcess(tb testing.TB) (string, []byte) {
	tb.Helper()
	return miniServerProcessEnv(tb, "1")
}

// miniServerProcessEnv starts the mini server in mode ("1": logins, "fanout":
// a room, pinned to CPU 0 when taskset exists, as the harness pins servers).
func miniServerProcessEnv(tb testing.TB, mode string) (string, []byte) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if _, err := os.Stat("/usr/bin/taskset"); err == nil && mode == "fanout" {
		cmd = exec.Command("/usr/bin/taskset", "-c", "0", os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), miniServerEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	r := bufio.NewReader(out)
	addr, err := r.ReadString('\n')
	if err != nil {
		tb.Fatalf("mini server: %v", err)
	}
	var pemText strings.Builder
	for range 100 {
		l, err := r.ReadString('\n')
		if err != nil {
			tb.Fatalf("mini server certificate: %v", err)
		}
		if l == "END\n" {
			break
		}
		pemText.WriteString(l)
	}
	return strings.TrimSpace(addr), []byte(pemText.String())
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// loginLoop runs n full logins (as workload.Logins does: Login, then Close) on
// workers goroutines and returns the first error.
func loginLoop(ctx context.Context, opts Options, n, workers int) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opts
			o.Resource = "l" + strconv.Itoa(w)
			for int(next.Add(1)) <= n && ctx.Err() == nil {
				c, err := Login(ctx, o, "u"+strconv.Itoa(w), "pw"+strconv.Itoa(w))
				if err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}

// BenchmarkLoginCeiling measures the load generator's CPU cost per login — the
// benchmark's login workload exactly (TCP, stream, STARTTLS with a full handshake
// and certificate verification, SCRAM-SHA-1, bind, presence, ping, close), 50
// workers — against the mini server running as a separate process. It reports
// client-µs/login (the generator's CPU time per login, from getrusage) and
// logins/core-s (1e6 / that: the most logins/s the generator can drive from one
// core, i.e. its ceiling). Run with one P, as the harness does:
//
//	go test -run '^$' -bench LoginCeiling -cpu 1 -benchtime 3000x ./bench/loadgen
func BenchmarkLoginCeiling(b *testing.B) {
	for _, tc := range []struct {
		name   string
		curves string
	}{{"x25519", "x25519"}, {"default", "default"}} {
		b.Run(tc.name, func(b *testing.B) {
			addr, certPEM := miniServerProcess(b)
			v, err := NewVerifier(certPEM, "localhost")
			if err != nil {
				b.Fatal(err)
			}
			if err := SetTLSGroups(tc.curves); err != nil {
				b.Fatal(err)
			}
			defer SetCurvePreferences(nil)
			opts := Options{Addr: addr, Domain: "localhost", StartTLS: true, Verifier: v, Timeout: 20 * time.Second}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := loginLoop(ctx, opts, 100, 50); err != nil { // warm the SCRAM cache and the pin
				b.Fatal(err)
			}
			if gcHeld {
				defer HoldGC(InstrumentHeap)()
			} else {
				runtime.GC()
			}
			c0 := cpuSeconds()
			b.ResetTimer()
			if err := loginLoop(ctx, opts, b.N, benchWorkers); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu := cpuSeconds() - c0
			b.ReportMetric(cpu/float64(b.N)*1e6, "client-µs/login")
			b.ReportMetric(float64(b.N)/cpu, "logins/core-s")
			if v.FullVerifications() != 1 {
				b.Errorf("%d full certificate verifications, want 1 (pinned)", v.FullVerifications())
			}
		})
	}
}
