package workload

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"xedge/bench/loadgen"
)

// ChatResult is one one-to-one chat measurement.
type ChatResult struct {
	Pairs      int     `json:"pairs"`
	Window     int     `json:"window"`
	Seconds    float64 `json:"seconds"`
	Delivered  int64   `json:"delivered"`
	PerSecond  float64 `json:"per_second"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Samples    int     `json:"samples"`
	ServerCPU  float64 `json:"server_cpu"`
	ClientCPU  float64 `json:"client_cpu"`
	LostOrLate int64   `json:"undelivered_at_end"`
}

const maxSamples = 2_000_000

// Chat logs 2*pairs users in over STARTTLS and pairs them: A sends messages to B
// keeping `window` messages in flight; B answers each with a message back to A;
// each answer A receives lets A send the next one. Every message carries its send
// time, so the receiver records the one-way delivery latency (sender and receiver
// are in this process and share the monotonic clock). After a warm-up of 1 s,
// deliveries (both directions) are counted for d.
func Chat(ctx context.Context, t *Target, prefix string, pairs, window int, d time.Duration) (ChatResult, error) {
	r := ChatResult{Pairs: pairs, Window: window}
	ctx, cancel := context.WithTimeout(ctx, d+90*time.Second)
	defer cancel()
	conns, err := loginAll(ctx, t, prefix, 2*pairs, 0, true)
	if err != nil {
		return r, err
	}
	base := time.Now()
	var counting, stopping atomic.Bool
	var delivered, sent, received atomic.Int64
	var mu sync.Mutex
	var lat []int64
	sess := make([]*session, 2*pairs)
	msg := func(to []byte, buf []byte) []byte {
		buf = append(buf[:0], "<message type='chat' to='"...)
		buf = append(buf, to...)
		buf = append(buf, "'><body>"...)
		buf = strconv.AppendInt(buf, int64(time.Since(base)), 10)
		return append(buf, "</body></message>"...)
	}
	record := func(local []int64, el []byte) []int64 {
		ts, ok := bodyStamp(el)
		if !ok {
			return local
		}
		received.Add(1)
		if counting.Load() {
			delivered.Add(1)
			if len(local) < maxSamples/(2*pairs) {
				local = append(local, int64(time.Since(base))-ts)
			}
		}
		return local
	}
	flush := func(local []int64) {
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	}
	// Latency samples: preallocated per receiver so the measurement path does not
	// allocate (up to maxSamples in all).
	locals := make([][]int64, 2*pairs)
	for i := range locals {
		locals[i] = make([]int64, 0, min(maxSamples/(2*pairs), 1<<14))
	}
	for p := range pairs {
		a, b := 2*p, 2*p+1
		aJID, bJID := []byte(conns[a].JID), []byte(conns[b].JID)
		var abuf, bbuf []byte
		// B: record, echo back to A.
		sess[b] = newSession(conns[b], func(el []byte) {
			locals[b] = record(locals[b], el)
			if stopping.Load() {
				return
			}
			bbuf = msg(aJID, bbuf)
			if sess[b].send(bbuf) == nil {
				sent.Add(1)
			}
		}, nil)
		// A: record the echo, send the next.
		sess[a] = newSession(conns[a], func(el []byte) {
			locals[a] = record(locals[a], el)
			if stopping.Load() {
				return
			}
			abuf = msg(bJID, abuf)
			if sess[a].send(abuf) == nil {
				sent.Add(1)
			}
		}, nil)
	}
	defer func() {
		for _, s := range sess {
			if s != nil {
				s.close()
			}
		}
	}()
	// The generator's GC stays out of the measurement (loadgen.HoldGC): the
	// generator is the instrument, the same for every server.
	restoreGC := loadgen.HoldGC(loadgen.InstrumentHeap)
	defer func() {
		if restoreGC != nil {
			restoreGC()
		}
	}()
	for p := range pairs {
		a := 2 * p
		bJID := []byte(conns[a+1].JID)
		for range window {
			if err := sess[a].send(msg(bJID, nil)); err != nil {
				return r, fmt.Errorf("send: %w", err)
			}
			sent.Add(1)
		}
	}
	var err2 error
	if r.Seconds, r.ServerCPU, r.ClientCPU, err2 = measure(ctx, t, d, &counting); err2 != nil {
		return r, err2
	}
	stopping.Store(true)
	r.Delivered = delivered.Load()
	r.PerSecond = float64(r.Delivered) / r.Seconds
	// Let in-flight messages land, then close (bounded).
	for range 40 {
		if received.Load() >= sent.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.LostOrLate = sent.Load() - received.Load()
	restoreGC()
	restoreGC = nil
	for _, s := range sess {
		s.close()
	}
	for _, l := range locals {
		flush(l)
	}
	sess = nil
	r.P50Ms, r.P99Ms, r.MaxMs, r.Samples = quantiles(lat)
	t.Log.Info("chat", "server", t.Name, "pairs", pairs, "window", window, "msg_per_s", fmt.Sprintf("%.0f", r.PerSecond),
		"p50_ms", fmt.Sprintf("%.2f", r.P50Ms), "p99_ms", fmt.Sprintf("%.2f", r.P99Ms), "server_cpu", fmt.Sprintf("%.2f", r.ServerCPU), "client_cpu", fmt.Sprintf("%.2f", r.ClientCPU))
	if r.Delivered == 0 {
		return r, fmt.Errorf("no message delivered")
	}
	return r, nil
}

// bodyStamp parses the send time carried in a chat message's <body> (decimal
// nanoseconds since the run's base) without allocating.
func bodyStamp(el []byte) (int64, bool) {
	i := bytes.Index(el, []byte("<body>"))
	if i < 0 {
		return 0, false
	}
	var v int64
	n := 0
	for _, c := range el[i+len("<body>"):] {
		if c < '0' || c > '9' {
			if c != '<' || n == 0 {
				return 0, false
			}
			return v, true
		}
		if n == 18 {
			return 0, false
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return 0, false
}

// measure waits a warm-up second, then counts (counting set) for d and returns
// the measured seconds and the server's and the generator's CPU shares.
func measure(ctx context.Context, t *Target, d time.Duration, counting *atomic.Bool) (secs, server, client float64, err error) {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	}
	counting.Store(true)
	cpu := startCPU(t)
	start := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, 0, 0, ctx.Err()
	}
	counting.Store(false)
	return time.Since(start).Seconds(), cpu.share(), cpu.client(), nil
}

// quantiles sorts latencies (ns) and returns p50, p99 and max in ms and the count.
func quantiles(lat []int64) (p50, p99, max float64, n int) {
	if len(lat) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))]) / 1e6 }
	return q(0.50), q(0.99), float64(lat[len(lat)-1]) / 1e6, len(lat)
}
