package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// The MUC floor: what the MUC workload's latency phase measures against a
// server that does nothing but the fan-out's unavoidable part. The mini server
// in fan-out mode (a child process, pinned to CPU 0 when taskset exists, one P)
// keeps every logged-in connection in one room; a message from any of them is
// written to each, one TLS record and one write per occupant, in one loop, with
// the occupant's 'to' spliced into prepared bytes: no routing, no parsing
// beyond finding the body, no allocation per copy worth the name. What it takes
// on the host, from the send to the last copy at its socket, is the floor under
// any server's figure there.

// serveRoom joins conn to the room and relays its messages until it ends.
func (s *miniServer) serveRoom(conn net.Conn, sc *Scanner, jid string) {
	_ = conn.SetDeadline(time.Time{})
	s.rmu.Lock()
	s.room = append(s.room, roomConn{jid: jid, c: conn})
	s.rmu.Unlock()
	var out []byte
	for range 10_000_000 {
		el, err := sc.Next()
		if err != nil {
			return
		}
		switch string(Name(el)) {
		case "iq": // the login's ping
			if _, err := conn.Write([]byte("<iq type='result' id='" + string(Attr(el, "id")) + "'/>")); err != nil {
				return
			}
			continue
		case "message":
		default:
			continue
		}
		i := bytes.Index(el, []byte("<body>"))
		j := bytes.Index(el, []byte("</body>"))
		if i < 0 || j < i {
			continue
		}
		body := el[i : j+len("</body>")]
		s.rmu.Lock()
		room := s.room
		s.rmu.Unlock()
		for _, o := range room {
			out = append(out[:0], "<message type='groupchat' from='bench@conference.localhost/n0' id='x' to='"...)
			out = append(out, o.jid...)
			out = append(out, "'>"...)
			out = append(out, body...)
			out = append(out, "<stanza-id xmlns='urn:xmpp:sid:0' by='bench@conference.localhost' id='1'/></message>"...)
			if _, err := o.c.Write(out); err != nil {
				return
			}
		}
	}
}

// fanoutServerProcess starts the mini server in fan-out mode as a child process.
func fanoutServerProcess(tb testing.TB) (string, []byte) {
	tb.Helper()
	return miniServerProcessEnv(tb, "fanout")
}

// BenchmarkMUCFloor runs the MUC workload's latency phase against the fan-out
// mini server: 200 occupants logged in over STARTTLS with receive timestamps,
// one message in flight from occupant 0 (the next goes when all 200 copies are
// in), b.N messages. It reports the p50/p99 over every copy from the send to
// its arrival at the occupant's socket (floor-p50-ms, floor-p99-ms), the p50/p99
// of each message's last copy, and the p99 to when the generator had parsed a
// copy (read-p99-ms). Pin the generator to the other CPU, as the harness does:
//
//	taskset -c 1 go test -run '^$' -bench MUCFloor -cpu 1 -benchtime 2000x ./bench/loadgen
func BenchmarkMUCFloor(b *testing.B) {
	const occupants = 200
	addr, certPEM := fanoutServerProcess(b)
	v, err := NewVerifier(certPEM, "localhost")
	if err != nil {
		b.Fatal(err)
	}
	if err := SetTLSGroups("x25519"); err != nil {
		b.Fatal(err)
	}
	defer SetCurvePreferences(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := make([]*Conn, occupants)
	for i := range conns {
		o := Options{Addr: addr, Domain: "localhost", StartTLS: true, Verifier: v, Timeout: 20 * time.Second, RxStamps: true}
		c, err := Login(ctx, o, "u"+strconv.Itoa(i), "pw"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Abort()
		_ = c.SetDeadline(time.Time{})
		conns[i] = c
	}
	base := time.Now().UnixNano()
	var pending atomic.Int64
	var lastRx, lastRead atomic.Int64
	done := make(chan struct{}, 1)
	lat := make([][]int64, occupants)
	reads := make([][]int64, occupants)
	for i, c := range conns {
		lat[i] = make([]int64, 0, b.N+1)
		reads[i] = make([]int64, 0, b.N+1)
		go func() {
			for {
				el, err := c.Next()
				if err != nil {
					return
				}
				j := bytes.Index(el, []byte("<body>"))
				k := bytes.Index(el, []byte("</body>"))
				if j < 0 || k < j {
					continue
				}
				ts, err := strconv.ParseInt(string(el[j+len("<body>"):k]), 10, 64)
				if err != nil {
					continue
				}
				read := time.Now().UnixNano() - base - ts
				rx := c.RxStamp() - base - ts
				lat[i] = append(lat[i], rx)
				reads[i] = append(reads[i], read)
				atomicMaxTest(&lastRx, rx)
				atomicMaxTest(&lastRead, read)
				if pending.Add(-1) == 0 {
					done <- struct{}{}
				}
			}
		}()
	}
	send := func() error {
		pending.Store(occupants)
		msg := "<message type='groupchat' to='bench@conference.localhost'><body>" + strconv.FormatInt(time.Now().UnixNano()-base, 10) + "</body></message>"
		if err := conns[0].Send([]byte(msg)); err != nil {
			return err
		}
		select {
		case <-done:
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%d copies missing after 10 s", pending.Load())
		}
	}
	// Every occupant is in the room once its login is done; warm up.
	for range 20 {
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	for i := range lat {
		lat[i], reads[i] = lat[i][:0], reads[i][:0]
	}
	var lasts, lastReads []int64
	defer HoldGC(InstrumentHeap)()
	b.ResetTimer()
	for range b.N {
		lastRx.Store(0)
		lastRead.Store(0)
		if err := send(); err != nil {
			b.Fatal(err)
		}
		lasts = append(lasts, lastRx.Load())
		lastReads = append(lastReads, lastRead.Load())
	}
	b.StopTimer()
	var all, allRead []int64
	for i := range lat {
		all = append(all, lat[i]...)
		allRead = append(allRead, reads[i]...)
	}
	q := func(x []int64, f float64) float64 {
		slices.Sort(x)
		return float64(x[min(len(x)-1, int(f*float64(len(x))))]) / 1e6
	}
	b.ReportMetric(q(all, 0.5), "floor-p50-ms")
	b.ReportMetric(q(all, 0.99), "floor-p99-ms")
	b.ReportMetric(q(lasts, 0.5), "last-copy-p50-ms")
	b.ReportMetric(q(lasts, 0.99), "last-copy-p99-ms")
	b.ReportMetric(q(allRead, 0.99), "read-p99-ms")
	b.ReportMetric(q(lastReads, 0.5), "read-last-copy-p50-ms")
	if l, _ := os.ReadFile("/proc/loadavg"); len(l) > 0 {
		b.Logf("load average: %s", bytes.TrimSpace(l))
	}
}

func atomicMaxTest(a *atomic.Int64, v int64) {
	for o := a.Load(); v > o && !a.CompareAndSwap(o, v); o = a.Load() {
	}
}
