package c2s

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// Profiling harness for docs/performance.md. The idle-memory benchmark runs its
// clients in a child process (this test binary, re-executed with
// XMPPD_IDLE_CLIENT_ADDR set), so the heap and stack figures it reports are the
// server's alone:
//
//	go test -run '^$' -bench IdleSessionMemory -benchtime 1x ./xmppd/c2s
//	XMPPD_IDLE_HEAPPROF=/tmp/idle.heap go test ... # heap profile with the sessions idle

const (
	envIdleAddr = "XMPPD_IDLE_CLIENT_ADDR"
	envIdleN    = "XMPPD_IDLE_CLIENT_N"
)

// idleSessions is how many idle sessions BenchmarkIdleSessionMemory holds.
const idleSessions = 2000

type memFigures struct{ heap, stack, rss uint64 }

func readMem() memFigures {
	for i := 0; i < 8; i++ { // stacks shrink at GC; a few cycles settle them
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := memFigures{heap: ms.HeapInuse, stack: ms.StackInuse}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				f.rss = kb << 10
			}
		}
	}
	return f
}

// BenchmarkIdleSessionMemory logs in idleSessions STARTTLS sessions (bind + initial
// presence) from a child process, lets them idle, and reports the server's heap,
// goroutine-stack and RSS growth per session.
func BenchmarkIdleSessionMemory(b *testing.B) {
	if os.Getenv("XMPPD_IDLE_HEAPPROF") != "" {
		runtime.MemProfileRate = 1 // exact attribution (slow)
	}
	e := start(b, nil)
	for i := 0; i < b.N; i++ {
		before := readMem()
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), envIdleAddr+"="+e.addr, envIdleN+"="+strconv.Itoa(idleSessions))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		ready := make(chan error, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "READY" {
					ready <- nil
					io.Copy(io.Discard, out)
					return
				}
			}
			ready <- fmt.Errorf("client helper ended before READY: %v", sc.Err())
		}()
		select {
		case err := <-ready:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(5 * time.Minute):
			cmd.Process.Kill()
			b.Fatal("client helper: no READY in 5 min")
		}
		time.Sleep(2 * defaultParkAfter) // let every reader park
		after := readMem()
		if p := os.Getenv("XMPPD_IDLE_HEAPPROF"); p != "" {
			if f, err := os.Create(p); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		if n := e.srv.sessionCount(); n != idleSessions {
			b.Errorf("%d sessions bound, want %d", n, idleSessions)
		}
		stdin.Close()
		cmd.Wait()
		n := float64(idleSessions)
		b.ReportMetric(float64(after.heap-before.heap)/n, "heap-B/session")
		b.ReportMetric(float64(after.stack-before.stack)/n, "stack-B/session")
		b.ReportMetric(float64(after.rss-before.rss)/n, "rss-B/session")
		b.ReportMetric(float64((after.heap+after.stack)-(before.heap+before.stack))/n, "B/session")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for j := 0; j < 300 && e.srv.sessionCount() > 0 && ctx.Err() == nil; j++ {
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
	}
}

// sessionCount counts the connections with a bound session.
func (s *Server) sessionCount() int {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		if c.session() != nil {
			n++
		}
	}
	return n
}

// TestIdleClientHelper is the client side of BenchmarkIdleSessionMemory; it does
// nothing unless started by it.
func TestIdleClientHelper(t *testing.T) {
	addr := os.Getenv(envIdleAddr)
	if addr == "" {
		t.Skip("helper process for BenchmarkIdleSessionMemory")
	}
	n, _ := strconv.Atoi(os.Getenv(envIdleN))
	conns := make([]*testenv.Raw, 0, n)
	for i := 0; i < n; i++ {
		c := testenv.Dial(t, addr)
		c.StartTLS("localhost")
		c.LoginPlain("localhost", "alice", "secret", "r"+strconv.Itoa(i))
		c.Send("<presence/>")
		conns = append(conns, c)
	}
	// One round trip per connection proves the presence was processed.
	for i, c := range conns {
		c.Send("<iq type='get' id='p" + strconv.Itoa(i) + "'><ping xmlns='urn:xmpp:ping'/></iq>")
	}
	for i, c := range conns {
		c.Expect("id='p"+strconv.Itoa(i)+"'", 30*time.Second)
	}
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin)
}

// BenchmarkMessageThroughput sends b.N chat messages from one STARTTLS session to
// another (server and both clients in this process, no modules) and counts them
// arriving: the c2s + router cost per routed message, plus the clients' TLS.
func BenchmarkMessageThroughput(b *testing.B) {
	// No window: bob's queue must hold what alice sends ahead of his writer.
	e := start(b, func(c *Config) { c.SendQueue = 1 << 22 })
	bob := testenv.Dial(b, e.addr)
	bob.StartTLS("localhost")
	bob.LoginPlain("localhost", "bob", "secret", "b")
	bob.Send("<presence/>")
	alice := testenv.Dial(b, e.addr)
	alice.StartTLS("localhost")
	alice.LoginPlain("localhost", "alice", "secret", "a")
	alice.Send("<presence/>")
	bob.Send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
	bob.Expect("id='sync'", 10*time.Second)
	msg := "<message to='bob@localhost/b' type='chat'><body>hello, this is a benchmark message</body></message>"
	const batch = 32
	b.ReportAllocs()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		var sb strings.Builder
		for sent := 0; sent < b.N; {
			sb.Reset()
			for k := 0; k < batch && sent < b.N; k++ {
				sb.WriteString(msg)
				sent++
			}
			if err := alice.TrySend(sb.String()); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 64<<10)
	got := 0
	tail := ""
	bob.Conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for got < b.N {
		n, err := bob.Conn.Read(buf)
		if err != nil {
			b.Fatalf("after %d of %d messages: %v", got, b.N, err)
		}
		s := tail + string(buf[:n])
		got += strings.Count(s, "</message>")
		if i := strings.LastIndex(s, "</message>"); i >= 0 {
			s = s[i+len("</message>"):]
		}
		if len(s) > 16 {
			s = s[len(s)-16:]
		}
		tail = s
	}
	b.StopTimer()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
