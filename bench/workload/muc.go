package workload

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"xedge/bench/loadgen"
)

// MUCResult is the group-chat fan-out measurement.
type MUCResult struct {
	Occupants int     `json:"occupants"`
	Senders   int     `json:"senders"`
	Window    int     `json:"window"`
	JoinSecs  float64 `json:"join_seconds"`
	Seconds   float64 `json:"seconds"`
	Sent      int64   `json:"messages_sent"`
	Delivered int64   `json:"deliveries"`
	PerSecond float64 `json:"deliveries_per_second"`
	// Latency of the copies in the throughput phase (mostly queueing: 2 ×
	// senders messages in flight).
	P50Ms   float64 `json:"p50_ms_loaded"`
	P99Ms   float64 `json:"p99_ms_loaded"`
	MaxMs   float64 `json:"max_ms_loaded"`
	Samples int     `json:"samples_loaded"`
	// The latency phase: one sender, one message in flight (the next goes
	// when every occupant has the previous one), so each message's copies
	// measure the fan-out itself on an otherwise idle server. Every latency
	// runs from the send to the kernel's receive time of the copy at its
	// occupant's socket (SO_TIMESTAMPNS; Rx: true), so the generator's own
	// time to read, decrypt and parse 200 copies is not in it; the same
	// latencies to when the generator had parsed each copy are the Read
	// figures (what the figure was before the receive times).
	Rx           bool    `json:"kernel_receive_times"`
	LatPerSecond float64 `json:"latency_phase_deliveries_per_second"`
	LatP50Ms     float64 `json:"p50_ms"`
	LatP99Ms     float64 `json:"p99_ms"`
	LatMaxMs     float64 `json:"max_ms"`
	LatSamples   int     `json:"samples"`
	ReadP50Ms    float64 `json:"p50_ms_read"`
	ReadP99Ms    float64 `json:"p99_ms_read"`
	ReadMaxMs    float64 `json:"max_ms_read"`
	// Per message of the latency phase: when its first and its last copy
	// arrived (p50 over messages), and how many messages it sent.
	LatFirstP50Ms float64 `json:"first_copy_p50_ms"`
	LatLastP50Ms  float64 `json:"last_copy_p50_ms"`
	LatLastP99Ms  float64 `json:"last_copy_p99_ms"`
	// The same for when the generator had parsed the last copy.
	ReadLastP50Ms float64 `json:"last_copy_p50_ms_read"`
	ReadLastP99Ms float64 `json:"last_copy_p99_ms_read"`
	LatMessages   int     `json:"latency_phase_messages"`
	LatServerCPU  float64 `json:"latency_phase_server_cpu"`
	LatClientCPU  float64 `json:"latency_phase_client_cpu"`
	// Time the server's and the generator's threads spent runnable but
	// waiting for a CPU (run queue), ms per second of the latency phase:
	// what the host's other work added to the phase's latencies.
	LatServerRunQueue float64 `json:"latency_phase_server_runqueue_ms_per_s"`
	LatClientRunQueue float64 `json:"latency_phase_client_runqueue_ms_per_s"`
	// Share of the server's CPU (and of the generator's) that other processes
	// used during the latency phase: busy time of the CPU less the server's
	// own (the generator's own), per second; -1 if unknown.
	LatServerCPUOthers float64 `json:"latency_phase_server_core_used_by_others"`
	LatClientCPUOthers float64 `json:"latency_phase_client_core_used_by_others"`
	// How fast the server's CPU was right before and right after the latency
	// phase: µs for a fixed piece of work on it (coreSpeed); -1 if unknown.
	// The host's virtual CPUs are not equally fast at all times, and the
	// servers' phases run minutes apart.
	LatCoreBeforeUs float64 `json:"latency_phase_server_core_us_before"`
	LatCoreAfterUs  float64 `json:"latency_phase_server_core_us_after"`
	ServerCPU       float64 `json:"server_cpu"`
	ClientCPU       float64 `json:"client_cpu"`
	LostOrLate      int64   `json:"undelivered_at_end"`
}

// nsMUC and nsMUCOwner are the XEP-0045 namespaces the workload speaks.
const (
	nsMUC      = "http://jabber.org/protocol/muc"
	nsMUCOwner = "http://jabber.org/protocol/muc#owner"
)

// MUCRoom is the benchmark room's JID on a server of domain.
func MUCRoom(domain string) string { return "bench@conference." + domain }

// MUC logs occupants users (prefix0..) in over STARTTLS and has them join one
// room on conference.DOMAIN (the first creates it and accepts the default
// configuration, XEP-0045 §10.1.2, since every server here locks a new room);
// then the first senders occupants send groupchat messages, each keeping window
// messages in flight: its next message goes when the room reflects one of its
// own back. Every message carries its send time, so every occupant records the
// delivery latency of every copy it receives. After a warm-up of 1 s,
// deliveries to all occupants (the sender's reflection included) are counted
// for d. Then, once everything sent has landed, the latency phase: the first
// occupant alone sends, one message in flight, for d: its next message goes
// when the last of the occupants has the previous one (not when its own copy
// comes back, which a server may deliver first, so that messages would
// overlap and the figure would depend on where the sender sits in the
// server's delivery order).
func MUC(ctx context.Context, t *Target, prefix string, occupants, senders, window int, d time.Duration) (MUCResult, error) {
	r := MUCResult{Occupants: occupants, Senders: senders, Window: window}
	ctx, cancel := context.WithTimeout(ctx, d+3*time.Minute)
	defer cancel()
	o := t.opts(true)
	o.RxStamps = true
	conns, err := loginAllOpts(ctx, t, prefix, occupants, 0, o)
	if err != nil {
		return r, err
	}
	r.Rx = true
	room := MUCRoom(t.Domain)
	nick := func(i int) string { return "n" + strconv.Itoa(i) }
	// Send times are wall-clock (CLOCK_REALTIME, as the kernel's receive
	// times) since base, so a body's number stays short.
	base := time.Now().UnixNano()
	now := func() int64 { return time.Now().UnixNano() - base }
	var counting, stopping atomic.Bool
	var delivered, sent, received atomic.Int64
	var active, phase atomic.Int32 // senders sending; 0 throughput, 1 latency
	// The latency phase's message in flight: copies still to arrive, and the
	// first and last arrival of each message.
	var pending atomic.Int64
	var lmu sync.Mutex
	var firsts, lasts, lastsRead []int64
	// Earliest and latest receive time of the message in flight's copies.
	var firstRx, lastRx, lastRead atomic.Int64
	resetRx := func() { firstRx.Store(math.MaxInt64); lastRx.Store(0); lastRead.Store(0) }
	resetRx()
	var lbuf []byte
	active.Store(int32(senders))
	joined := make([]chan []byte, occupants)
	locals := [2][][]int64{make([][]int64, occupants), make([][]int64, occupants)}
	reads := make([][]int64, occupants) // latency phase, parse time
	sess := make([]*session, occupants)
	msg := func(buf []byte) []byte {
		buf = append(buf[:0], "<message type='groupchat' to='"...)
		buf = append(buf, room...)
		buf = append(buf, "'><body>"...)
		buf = strconv.AppendInt(buf, now(), 10)
		return append(buf, "</body></message>"...)
	}
	per := max(1, maxSamples/occupants)
	for i := range occupants {
		i := i
		joined[i] = make(chan []byte, 1)
		locals[0][i] = make([]int64, 0, min(per, 1<<13))
		locals[1][i] = make([]int64, 0, 1<<10)
		reads[i] = make([]int64, 0, 1<<10)
		self := []byte(room + "/" + nick(i))
		var buf []byte
		sess[i] = newSession(conns[i], func(el []byte) {
			if string(attr(el, "type")) != "groupchat" {
				return
			}
			ts, ok := bodyStamp(el)
			if !ok {
				return
			}
			received.Add(1)
			readLat := now() - ts
			lat := readLat
			if rx := conns[i].RxStamp(); rx != 0 {
				lat = rx - base - ts
			}
			ph := phase.Load()
			if counting.Load() {
				delivered.Add(1)
				if len(locals[ph][i]) < per {
					locals[ph][i] = append(locals[ph][i], lat)
				}
				if ph == 1 && len(reads[i]) < per {
					reads[i] = append(reads[i], readLat)
				}
			}
			if ph == 1 {
				atomicMin(&firstRx, lat)
				atomicMax(&lastRx, lat)
				atomicMax(&lastRead, readLat)
				if left := pending.Add(-1); left == 0 {
					lmu.Lock()
					if counting.Load() {
						firsts = append(firsts, firstRx.Load())
						lasts = append(lasts, lastRx.Load())
						lastsRead = append(lastsRead, lastRead.Load())
					}
					resetRx()
					if !stopping.Load() {
						pending.Store(int64(occupants))
						lbuf = msg(lbuf)
						if sess[0].send(lbuf) == nil {
							sent.Add(1)
						}
					}
					lmu.Unlock()
				}
				return
			}
			if i < int(active.Load()) && bytes.Equal(attr(el, "from"), self) && !stopping.Load() {
				buf = msg(buf)
				if sess[i].send(buf) == nil {
					sent.Add(1)
				}
			}
		}, func(el []byte) {
			if bytes.Equal(attr(el, "from"), self) {
				select {
				case joined[i] <- append([]byte(nil), el...):
				default:
				}
			}
		})
	}
	defer func() {
		for _, s := range sess {
			if s != nil {
				s.close()
			}
		}
	}()
	join := func(ctx context.Context, i int) error {
		p := "<presence to='" + room + "/" + nick(i) + "'><x xmlns='" + nsMUC + "'><history maxstanzas='0'/></x></presence>"
		if err := sess[i].send([]byte(p)); err != nil {
			return err
		}
		var el []byte
		select {
		case el = <-joined[i]:
		case <-ctx.Done():
			return fmt.Errorf("join %s: %w", nick(i), ctx.Err())
		}
		if string(attr(el, "type")) == "error" {
			return fmt.Errorf("join %s: %.300s", nick(i), el)
		}
		if bytes.Contains(el, []byte("code='201'")) || bytes.Contains(el, []byte(`code="201"`)) {
			id := sess[i].c.NextID()
			res, err := sess[i].iq(id, []byte("<iq type='set' id='"+id+"' to='"+room+"'><query xmlns='"+nsMUCOwner+
				"'><x xmlns='jabber:x:data' type='submit'/></query></iq>"), 30*time.Second)
			if err != nil {
				return fmt.Errorf("instant room: %w", err)
			}
			if string(attr(res, "type")) != "result" {
				return fmt.Errorf("instant room: %.300s", res)
			}
		}
		return nil
	}
	start := time.Now()
	jctx, jcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer jcancel()
	if err := join(jctx, 0); err != nil {
		return r, err
	}
	if err := Parallel(jctx, occupants-1, 20, func(ctx context.Context, i int) error { return join(ctx, i+1) }); err != nil {
		return r, err
	}
	r.JoinSecs = time.Since(start).Seconds()
	t.Log.Info("room joined", "server", t.Name, "occupants", occupants, "took", time.Since(start).Round(time.Millisecond))

	restoreGC := loadgen.HoldGC(loadgen.InstrumentHeap)
	defer func() {
		if restoreGC != nil {
			restoreGC()
		}
	}()
	for i := range senders {
		for range window {
			if err := sess[i].send(msg(nil)); err != nil {
				return r, fmt.Errorf("send: %w", err)
			}
			sent.Add(1)
		}
	}
	if r.Seconds, r.ServerCPU, r.ClientCPU, err = measure(ctx, t, d, &counting); err != nil {
		return r, err
	}
	stopping.Store(true)
	r.Delivered = delivered.Load()
	r.PerSecond = float64(r.Delivered) / r.Seconds
	want := func() int64 { return sent.Load() * int64(occupants) }
	drain := func() {
		for range 100 {
			if received.Load() >= want() {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	drain()
	r.Sent = sent.Load()
	r.LostOrLate = want() - received.Load()
	if r.LostOrLate > 0 {
		return r, fmt.Errorf("%d groupchat copies not delivered", r.LostOrLate)
	}
	// The latency phase.
	r.LatCoreBeforeUs = coreSpeed(t.ServerCPU)
	phase.Store(1)
	active.Store(1)
	delivered.Store(0)
	stopping.Store(false)
	pending.Store(int64(occupants))
	if err := sess[0].send(msg(nil)); err != nil {
		return r, fmt.Errorf("send: %w", err)
	}
	sent.Add(1)
	pid := 0
	if t.PID != nil {
		pid = t.PID()
	}
	w0, s0, m0 := runQueueWait(pid), runQueueWait(os.Getpid()), time.Now()
	busy0, cbusy0 := cpuBusy(t.ServerCPU), cpuBusy(t.ClientCPU)
	var own0 float64
	if t.CPU != nil {
		own0, _ = t.CPU()
	}
	self0 := selfCPU()
	secs, lsrv, lcli, err := measure(ctx, t, d, &counting)
	if err != nil {
		return r, err
	}
	r.LatServerCPUOthers, r.LatClientCPUOthers = -1, -1
	if el := time.Since(m0).Seconds(); el > 0 {
		r.LatServerRunQueue = (runQueueWait(pid) - w0) * 1e3 / el
		r.LatClientRunQueue = (runQueueWait(os.Getpid()) - s0) * 1e3 / el
		if b := cpuBusy(t.ServerCPU); busy0 >= 0 && b >= 0 && t.CPU != nil {
			own, _ := t.CPU()
			r.LatServerCPUOthers = max(0, (b-busy0)-(own-own0)) / el
		}
		if b := cpuBusy(t.ClientCPU); cbusy0 >= 0 && b >= 0 {
			r.LatClientCPUOthers = max(0, (b-cbusy0)-(selfCPU()-self0)) / el
		}
	}
	stopping.Store(true)
	r.LatPerSecond = float64(delivered.Load()) / secs
	r.LatServerCPU, r.LatClientCPU = lsrv, lcli
	drain()
	r.LatCoreAfterUs = coreSpeed(t.ServerCPU)
	r.Sent = sent.Load()
	r.LostOrLate = want() - received.Load()
	restoreGC()
	restoreGC = nil
	for _, s := range sess {
		s.close()
	}
	sess = nil
	var lat, lat1, read1 []int64
	for i := range occupants {
		lat = append(lat, locals[0][i]...)
		lat1 = append(lat1, locals[1][i]...)
		read1 = append(read1, reads[i]...)
	}
	r.P50Ms, r.P99Ms, r.MaxMs, r.Samples = quantiles(lat)
	r.LatP50Ms, r.LatP99Ms, r.LatMaxMs, r.LatSamples = quantiles(lat1)
	r.ReadP50Ms, r.ReadP99Ms, r.ReadMaxMs, _ = quantiles(read1)
	lmu.Lock()
	r.LatFirstP50Ms, _, _, r.LatMessages = quantiles(firsts)
	r.LatLastP50Ms, r.LatLastP99Ms, _, _ = quantiles(lasts)
	r.ReadLastP50Ms, r.ReadLastP99Ms, _, _ = quantiles(lastsRead)
	lmu.Unlock()
	t.Log.Info("muc fan-out", "server", t.Name, "occupants", occupants, "senders", senders, "window", window,
		"deliveries_per_s", fmt.Sprintf("%.0f", r.PerSecond), "p99_ms_loaded", fmt.Sprintf("%.2f", r.P99Ms),
		"p50_ms", fmt.Sprintf("%.2f", r.LatP50Ms), "p99_ms", fmt.Sprintf("%.2f", r.LatP99Ms),
		"p99_ms_read", fmt.Sprintf("%.2f", r.ReadP99Ms),
		"first_copy_p50_ms", fmt.Sprintf("%.2f", r.LatFirstP50Ms), "last_copy_p50_ms", fmt.Sprintf("%.2f", r.LatLastP50Ms),
		"latency_server_cpu", fmt.Sprintf("%.2f", r.LatServerCPU), "latency_client_cpu", fmt.Sprintf("%.2f", r.LatClientCPU),
		"latency_server_runqueue_ms_per_s", fmt.Sprintf("%.1f", r.LatServerRunQueue), "latency_client_runqueue_ms_per_s", fmt.Sprintf("%.1f", r.LatClientRunQueue),
		"latency_server_core_used_by_others", fmt.Sprintf("%.2f", r.LatServerCPUOthers), "latency_client_core_used_by_others", fmt.Sprintf("%.2f", r.LatClientCPUOthers),
		"latency_server_core_us_before", fmt.Sprintf("%.0f", r.LatCoreBeforeUs), "latency_server_core_us_after", fmt.Sprintf("%.0f", r.LatCoreAfterUs),
		"server_cpu", fmt.Sprintf("%.2f", r.ServerCPU), "client_cpu", fmt.Sprintf("%.2f", r.ClientCPU))
	if r.Delivered == 0 {
		return r, fmt.Errorf("no groupchat message delivered")
	}
	return r, nil
}

func atomicMin(a *atomic.Int64, v int64) {
	for o := a.Load(); v < o && !a.CompareAndSwap(o, v); o = a.Load() {
	}
}

func atomicMax(a *atomic.Int64, v int64) {
	for o := a.Load(); v > o && !a.CompareAndSwap(o, v); o = a.Load() {
	}
}
