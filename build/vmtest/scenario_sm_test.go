//go:build vmtest

package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"xedge/bench/loadgen"
	"xedge/build/lab"
)

// Helpers of the failure scenarios (b)–(f): a clustered lab booted directly (PVH,
// much faster than PXE under TCG) in a network namespace, and an XEP-0198 client
// that runs on the host side of the lab's bridge (10.77.0.1), counts what the
// server acknowledged and resumes its session through any node.

const (
	scenarioDomain = "lab.example"
	scenarioVIP    = "10.77.0.100"
)

// scenarioLab boots n clustered nodes (direct boot, root mode) with the lab's TCG
// timing and extraYAML appended to every node's xmppd configuration.
func scenarioLab(t *testing.T, ctx context.Context, n int, storage bool, extraYAML string) (string, *lab.State) {
	t.Helper()
	need(t)
	if os.Geteuid() != 0 {
		t.Skip("the scenario lab needs root (network namespace, bridge, taps, tgtd); CI runs the VM tier as root")
	}
	xedge := xedgeTool(t)
	waitVMSlots(t, n)
	dir := t.TempDir()
	if extraYAML != "" {
		if err := os.WriteFile(filepath.Join(dir, "xmppd.extra.yaml"), []byte(extraYAML), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, lines, err := lab.Up(ctx, lab.UpOptions{Dir: dir, Kernel: img.Vmlinux, Initrd: img.Cpio, Nodes: n, MaxBoot: 3,
		Domain: scenarioDomain, Mode: "netns", Storage: storage, ClusterKey: "scenario-cluster-key-0123456789",
		// The boot server serves xmppd.yaml (TCG timing + extraYAML) to direct boots too.
		Params: "xedge.debug=1 xedge.restarts=10/30m xedge.config=http://10.77.0.1/xmppd.yaml",
		Self:   []string{xedge, "lab", "--dir", dir, "segment"}, Log: os.Stderr, WaitReady: 6 * time.Minute})
	resetClients()
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= 5; i++ {
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("node%d", i), "console.log")); err == nil {
					t.Logf("node%d console:\n%s", i, consoleTail(dir, fmt.Sprintf("node%d", i)))
				}
			}
		}
		// A failed run always keeps its logs; a passed one when
		// XEDGE_SCENARIO_LOGS names where (its figures come from them).
		if t.Failed() || os.Getenv("XEDGE_SCENARIO_LOGS") != "" {
			dumpLogs(t, dir)
		}
		_ = lab.Down(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		if !strings.Contains(l, fmt.Sprintf(": ready 10.77.0.%d ", 11+i)) {
			t.Fatalf("node%d did not come up serving: %q", i+1, l)
		}
	}
	t.Logf("scenario lab up: %v (load %s)", lines, loadAvg())
	return dir, st
}

// waitVMSlots waits (up to 30 minutes) until n more VMs keep the host at three
// qemu processes at most: VM tests of other packages or runs may share it.
func waitVMSlots(t *testing.T, n int) {
	t.Helper()
	logged := -1
	for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); {
		running := runningQemus()
		if running+n <= 3 {
			return
		}
		if running != logged {
			t.Logf("waiting for VM slots: %d qemu running, %d wanted, three at most", running, n)
			logged = running
		}
		time.Sleep(time.Second)
	}
}

// runningQemus counts qemu-system processes that are alive: a qemu that has
// exited but that its parent has not reaped yet (a zombie, which pgrep counts)
// holds no CPU.
func runningQemus() int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if comm, state, ok := procStat(string(b)); ok && strings.HasPrefix(comm, "qemu-system") && state != 'Z' && state != 'X' {
			n++
		}
	}
	return n
}

// procStat returns the command name and state of a /proc/PID/stat line,
// "pid (comm) state ...": comm may hold spaces and parentheses, so it ends at
// the last ')'.
func procStat(stat string) (comm string, state byte, ok bool) {
	i, j := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if i < 0 || j < i || j+2 >= len(stat) {
		return "", 0, false
	}
	return stat[i+1 : j], stat[j+2], true
}

func nodeSock(dir, n string) string { return filepath.Join(dir, n, "console.sock") }

// consoleUntil runs a console command until ok accepts its output (bounded by d).
func consoleUntil(ctx context.Context, dir, node, line string, d time.Duration, ok func(string) bool) (string, error) {
	deadline := time.Now().Add(d)
	out := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var err error
		out, err = lab.Run(ctx, nodeSock(dir, node), line)
		if err == nil && ok(out) {
			return out, nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return out, fmt.Errorf("%s: %q not as wanted within %s; last output:\n%s", node, line, d, out)
}

// registerUsers creates accounts on node1 and waits until every node sees them.
func registerUsers(t *testing.T, ctx context.Context, dir string, nodes []string, users ...string) {
	t.Helper()
	for _, u := range users {
		// Retried (bounded) while it fails: on loaded TCG guests the admin
		// socket's answer can time out while raft settles; an attempt that
		// timed out may have committed, which `users` then shows.
		var out string
		var err error
		for deadline := time.Now().Add(2 * time.Minute); ; {
			out, err = lab.Run(ctx, nodeSock(dir, "node1"), "register "+u+" secret-"+u)
			if err == nil && !strings.Contains(out, "error") {
				break
			}
			if l, _ := lab.Run(ctx, nodeSock(dir, "node1"), "users"); !strings.Contains(l, "error") && strings.Contains(l, u) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("register %s on node1: %v\n%s", u, err, out)
			}
			t.Logf("register %s on node1 (retrying): %v %s", u, err, out)
			time.Sleep(2 * time.Second)
		}
	}
	for _, n := range nodes {
		if _, err := consoleUntil(ctx, dir, n, "users", 2*time.Minute, func(s string) bool {
			for _, u := range users {
				if !strings.Contains(s, u) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// inNetNS runs f on an OS thread inside the named namespace: sockets f opens live
// there (the host side of the lab's bridge).
func inNetNS(name string, f func() error) error {
	if name == "" { // the host's own namespace (a client on loopback)
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		h, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// vipHolderMAC is the lab node whose MAC the namespace's neighbour table has for
// the VIP (the node a client of the VIP talks to), or "".
func vipHolderMAC(ns string) string {
	out, _ := exec.Command("ip", "-n", ns, "neigh", "show", scenarioVIP).Output()
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) && strings.HasPrefix(f[i+1], "52:54:00:77:01:") {
			n, err := strconv.ParseInt(strings.TrimPrefix(f[i+1], "52:54:00:77:01:"), 16, 32)
			if err == nil {
				return fmt.Sprintf("node%d", n)
			}
		}
	}
	return ""
}

var vipHolderRe = regexp.MustCompile(regexp.QuoteMeta(scenarioVIP) + `/24\s+(node\d+)\s`)

// smClient is an XMPP client with XEP-0198 stream management and resumption on
// loadgen's raw connection. It counts stanzas both ways, records message bodies
// received, keeps every stanza it sent until the server acknowledged it and
// resends the unacknowledged ones after a resume (at-least-once, as the XEP says).
type smClient struct {
	name, user, addr, resource, ns string
	// fallbacks are other addresses to resume through (a client with SRV records
	// tries the next target); reconnect rotates through addr and these.
	fallbacks []string
	// stallAfter: an <r/> unanswered this long makes keepResumed drop the
	// connection and resume (3 s; scenarios on a loaded host give more).
	stallAfter time.Duration
	// attemptTimeout bounds one resume attempt (3 s; more on a loaded host,
	// where a resumption that takes over a session from a peer can take
	// longer, and a client that gives up on it sends the session back and
	// forth between the nodes).
	attemptTimeout time.Duration

	mu     sync.Mutex
	c      *loadgen.Conn
	gen    int // connection generation (a reader ends only its own)
	previd string
	hIn    uint64   // stanzas received since the current session's <enabled/>
	sent   [][]byte // stanzas sent since the first <enabled/>; sent[i] is stanza i+1
	acked  uint64   // stanzas of sent acknowledged: base + the server's last h
	base   uint64   // stanzas of sent before the current session's <enabled/>
	// sessions counts fresh logins after the first (a resume the server
	// refused: the client logs in anew and resends what was not acknowledged).
	sessions int
	// abandoned are the ranges of sent a refused session never acknowledged
	// (resent in the next one): not acknowledged, whatever acked says.
	abandoned [][2]int
	lastR     time.Time
	lastA     time.Time
	msgN      int            // messages numbered so far (by traffic, one goroutine at a time)
	got       map[string]int // message body -> times received
	firstAt   map[string]time.Time
	events    []string      // what happened, with times (eventLocked)
	dead      chan struct{} // closed when the current connection's reader ends
	logf      func(string, ...any)
}

func newSMClient(name, ns, addr, user, resource string, logf func(string, ...any)) *smClient {
	c := &smClient{name: name, ns: ns, addr: addr, user: user, resource: resource,
		got: map[string]int{}, firstAt: map[string]time.Time{}, logf: logf, stallAfter: 3 * time.Second, attemptTimeout: 3 * time.Second}
	clients.mu.Lock()
	clients.list = append(clients.list, c)
	clients.mu.Unlock()
	return c
}

// clients are the scenario clients made since the current lab came up (their
// event logs are kept when the scenario fails).
var clients struct {
	mu   sync.Mutex
	list []*smClient
}

func resetClients() {
	clients.mu.Lock()
	clients.list = nil
	clients.mu.Unlock()
}

// maxEvents bounds a client's event log.
const maxEvents = 200000

// event records what the client did or saw, with the host's UTC time (the
// guests' logs, node.log, carry their own clock in the same format). s.mu is held.
func (s *smClient) eventLocked(format string, args ...any) {
	if len(s.events) < maxEvents {
		s.events = append(s.events, time.Now().UTC().Format("15:04:05.000000 ")+fmt.Sprintf(format, args...))
	}
}

func (s *smClient) event(format string, args ...any) {
	s.mu.Lock()
	s.eventLocked(format, args...)
	s.mu.Unlock()
}

// dumpLogs keeps every node's log (node.log: init's and xmppd's, mirrored to the
// VM's second serial port) and every client's event log in a directory that
// outlives the test ($XEDGE_SCENARIO_LOGS or a new one under the system's
// temporary directory) and prints the nodes' xmppd lines and the client events
// around what was lost (the nodes' lines only when t failed).
func dumpLogs(t *testing.T, dir string) {
	keep := os.Getenv("XEDGE_SCENARIO_LOGS")
	if keep == "" {
		var err error
		if keep, err = os.MkdirTemp("", "xedge-scenario-logs-"); err != nil {
			t.Logf("logs not kept: %v", err)
			return
		}
	}
	keep = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().UTC().Format("150405"))
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Logf("logs not kept: %v", err)
		return
	}
	for i := 1; i <= 5; i++ {
		n := fmt.Sprintf("node%d", i)
		for _, f := range []string{"node.log", "console.log"} {
			if b, err := os.ReadFile(filepath.Join(dir, n, f)); err == nil {
				_ = os.WriteFile(filepath.Join(keep, n+"-"+f), b, 0o644)
				if f == "node.log" && t.Failed() {
					t.Logf("%s xmppd log (%d bytes; init's lines left out):\n%s", n, len(b), xmppdLines(string(b), 4000))
				}
			}
		}
	}
	clients.mu.Lock()
	list := slices.Clone(clients.list)
	clients.mu.Unlock()
	for _, c := range list {
		c.mu.Lock()
		ev := strings.Join(c.events, "\n")
		c.mu.Unlock()
		_ = os.WriteFile(filepath.Join(keep, "client-"+c.name+".log"), []byte(ev+"\n"), 0o644)
	}
	t.Logf("node and client logs kept in %s", keep)
}

// xmppdLines is the xmppd lines of a node log (its last max lines).
func xmppdLines(log string, max int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "xmppd: ") {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}

// clientTrace prints the events of c that mention any of bodies (a lost message's
// send, acknowledgement window and resumptions), for a failure report.
func clientTrace(c *smClient, bodies []string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		keep := strings.Contains(e, " resume") || strings.Contains(e, " connection") || strings.Contains(e, " login")
		for _, b := range bodies {
			if strings.Contains(e, " "+b+" ") || strings.HasSuffix(e, " "+b) {
				keep = true
			}
		}
		if keep {
			out = append(out, c.name+": "+e)
		}
	}
	return strings.Join(out, "\n")
}

func (s *smClient) opts(timeout time.Duration) loadgen.Options {
	return loadgen.Options{Addr: s.addr, Domain: scenarioDomain, StartTLS: true, Resource: s.resource, Timeout: timeout}
}

// dial connects and authenticates (STARTTLS, SCRAM-SHA-1) from the namespace.
func (s *smClient) dial(timeout time.Duration) (*loadgen.Conn, error) {
	var c *loadgen.Conn
	err := inNetNS(s.ns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		if c, err = loadgen.Dial(ctx, s.opts(timeout)); err != nil {
			return err
		}
		if err = c.Auth(s.user, "secret-"+s.user); err != nil {
			c.Abort()
		}
		return err
	})
	return c, err
}

const nsSM = "urn:xmpp:sm:3"

// initialPresence is sent right after <enable/>, so it is the session's first
// stanza in the server's count.
const initialPresence = "<presence/>"

// login: bind, initial presence, enable resumable stream management.
func (s *smClient) login(timeout time.Duration) error {
	c, err := s.dial(timeout)
	if err != nil {
		return err
	}
	if err := c.Bind(); err != nil {
		c.Abort()
		return err
	}
	// Enable before the initial presence: what the presence brings (offline
	// storage's flush) is then counted and acknowledged in the session.
	if err := c.Send([]byte("<enable xmlns='" + nsSM + "' resume='true'/>" + initialPresence)); err != nil {
		c.Abort()
		return err
	}
	for range 100 {
		el, err := c.Next()
		if err != nil {
			c.Abort()
			return fmt.Errorf("enable: %w", err)
		}
		switch string(loadgen.Name(el)) {
		case "enabled":
			s.mu.Lock()
			defer s.mu.Unlock()
			s.previd = string(loadgen.Attr(el, "id"))
			s.eventLocked("login: enabled id %s via %s", s.previd, s.addr)
			if s.previd == "" || string(loadgen.Attr(el, "resume")) != "true" {
				c.Abort()
				return fmt.Errorf("stream management without resumption: %.200q", el)
			}
			// A new session counts from 0 both ways. What the previous one
			// did not acknowledge is sent again in it (at-least-once).
			from := min(int(s.acked), len(s.sent))
			unacked := s.sent[from:]
			if len(unacked) > 0 {
				s.abandoned = append(s.abandoned, [2]int{from, len(s.sent)})
				s.eventLocked("new session: resending %d stanzas the previous one did not acknowledge", len(unacked))
			}
			if len(s.sent) > 0 {
				s.sessions++
			}
			s.base, s.acked, s.hIn = uint64(len(s.sent)), uint64(len(s.sent)), 0
			// The presence went after <enable/>: the server counts it (h).
			s.sent = append(s.sent, []byte(initialPresence))
			for _, b := range slices.Clone(unacked) {
				s.sent = append(s.sent, b)
				if err := c.Send(b); err != nil {
					c.Abort()
					return err
				}
			}
			s.attachLocked(c)
			return nil
		case "failed":
			c.Abort()
			return fmt.Errorf("enable failed: %.200q", el)
		case "message":
			// Before <enabled/>: not counted in h, but it reached the user.
			if b := loadgen.Child(el, "body"); b != nil {
				body := loadgen.Text(b)
				s.mu.Lock()
				if s.got[body] == 0 {
					s.firstAt[body] = time.Now()
				}
				s.got[body]++
				s.eventLocked("recv before enabled %s", body)
				s.mu.Unlock()
			}
		}
	}
	c.Abort()
	return errors.New("no <enabled/>")
}

// resume authenticates on a new connection and resumes the previous session:
// the server's h says which of our stanzas it had; the rest are sent again.
func (s *smClient) resume(timeout time.Duration) (uint64, error) {
	c, err := s.dial(timeout)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	req := fmt.Sprintf("<resume xmlns='%s' h='%d' previd='%s'/>", nsSM, s.hIn, s.previd)
	s.mu.Unlock()
	if err := c.Send([]byte(req)); err != nil {
		c.Abort()
		return 0, err
	}
	el, err := c.Next()
	if err != nil {
		c.Abort()
		return 0, fmt.Errorf("resume: %w", err)
	}
	if string(loadgen.Name(el)) != "resumed" {
		c.Abort()
		s.event("resume via %s refused: %.300q", s.addr, el)
		return 0, fmt.Errorf("resume refused: %.300q", el)
	}
	h, _ := strconv.ParseUint(string(loadgen.Attr(el, "h")), 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	h += s.base
	s.eventLocked("resumed via %s: sent h=%d, server's h=%d (acked before %d, sent %d): resending %d", s.addr, s.hIn, h, s.acked, len(s.sent), len(s.sent)-min(int(max(h, s.acked)), len(s.sent)))
	if h > s.acked {
		s.acked = h
	}
	// Resent under the lock, before any new stanza: the server counts in order.
	for _, b := range s.sent[min(int(s.acked), len(s.sent)):] {
		if err := c.Send(b); err != nil {
			c.Abort()
			return h, err
		}
	}
	s.attachLocked(c)
	return h, nil
}

func (s *smClient) attach(c *loadgen.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attachLocked(c)
}

func (s *smClient) attachLocked(c *loadgen.Conn) {
	s.c = c
	s.gen++
	gen := s.gen
	s.dead = make(chan struct{})
	s.lastR, s.lastA = time.Time{}, time.Now()
	_ = c.SetDeadline(time.Now().Add(30 * time.Minute))
	go s.read(c, gen, s.dead)
}

func (s *smClient) read(c *loadgen.Conn, gen int, dead chan struct{}) {
	defer close(dead)
	for {
		el, err := c.Next()
		if err != nil {
			s.mu.Lock()
			if s.gen == gen {
				s.c = nil
			}
			s.eventLocked("connection %d ended: %v", gen, err)
			s.mu.Unlock()
			c.Abort()
			return
		}
		s.mu.Lock()
		switch string(loadgen.Name(el)) {
		case "message", "presence", "iq":
			s.hIn++
			if b := loadgen.Child(el, "body"); b != nil {
				body := loadgen.Text(b)
				if s.got[body] == 0 {
					s.firstAt[body] = time.Now()
				}
				s.eventLocked("recv #%d %s", s.hIn, body)
				s.got[body]++
			}
			if string(loadgen.Name(el)) == "iq" && string(loadgen.Attr(el, "type")) == "get" {
				s.sendLocked(fmt.Sprintf("<iq type='result' id='%s'/>", loadgen.Attr(el, "id")))
			}
		case "r":
			_ = c.Send(fmt.Appendf(nil, "<a xmlns='%s' h='%d'/>", nsSM, s.hIn))
		case "a":
			h, _ := strconv.ParseUint(string(loadgen.Attr(el, "h")), 10, 64)
			h += s.base
			if h > s.acked {
				s.acked = h
			}
			s.eventLocked("ack h=%d", h)
			s.lastA = time.Now()
		}
		s.mu.Unlock()
	}
}

// sendLocked records a stanza and writes it when connected (else it waits for the
// resume). s.mu is held.
func (s *smClient) sendLocked(stanza string) {
	b := []byte(stanza)
	s.sent = append(s.sent, b)
	if s.c != nil {
		_ = s.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = s.c.Send(b)
	}
}

// message sends body to a bare JID and asks for an acknowledgement every ackEvery.
func (s *smClient) message(to, body string, ackEvery int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendLocked(fmt.Sprintf("<message to='%s@%s' type='chat' id='%s'><body>%s</body></message>", to, scenarioDomain, body, body))
	s.eventLocked("sent #%d (connected %v) %s", len(s.sent), s.c != nil, body)
	if ackEvery > 0 && len(s.sent)%ackEvery == 0 {
		s.requestAckLocked()
	}
}

func (s *smClient) requestAckLocked() {
	if s.c != nil {
		_ = s.c.Send([]byte("<r xmlns='" + nsSM + "'/>"))
		if s.lastR.IsZero() || !s.lastA.Before(s.lastR) {
			s.lastR = time.Now()
		}
	}
}

// stalled: an <r/> has gone unanswered for d (the client's own liveness check, as
// mobile clients do, for a connection the network silently lost).
func (s *smClient) stalled(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c != nil && !s.lastR.IsZero() && s.lastA.Before(s.lastR) && time.Since(s.lastR) > d
}

func (s *smClient) connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c != nil
}

func (s *smClient) deadCh() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

func (s *smClient) abort() {
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	if c != nil {
		c.Abort()
	}
}

// counts: stanzas sent since enable, acknowledged by the server.
func (s *smClient) counts() (sent, acked uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.sent)), s.acked
}

// syncAcks asks for an acknowledgement until the server has acknowledged every
// stanza sent before the call (bounded by d). Stanzas sent meanwhile do not
// count: with traffic every 100 ms and acknowledgements that wait for a peer's
// copy of the session, "all sent so far" was a moving target the server's
// acknowledgements trailed by one or two for 30 s under TCG (scenario (b) in
// CI: "acknowledged 340 of 342" with nothing stalled).
func (s *smClient) syncAcks(d time.Duration) error {
	s.mu.Lock()
	target := uint64(len(s.sent))
	s.mu.Unlock()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		done := s.acked >= target
		s.requestAckLocked()
		s.mu.Unlock()
		if done {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	sent, acked := s.counts()
	return fmt.Errorf("%s: server acknowledged %d of the %d stanzas sent before the check after %s (%d sent now)", s.name, acked, target, d, sent)
}

// missing lists the bodies of want not received.
func (s *smClient) missing(want []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, b := range want {
		if s.got[b] == 0 {
			out = append(out, b)
		}
	}
	return out
}

// received is how many distinct message bodies arrived.
func (s *smClient) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// duplicates counts bodies received more than once (allowed: at-least-once).
func (s *smClient) duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := 0
	for _, n := range s.got {
		d += n - 1
	}
	return d
}

func (s *smClient) close() {
	s.mu.Lock()
	c := s.c
	s.c = nil
	s.mu.Unlock()
	if c != nil {
		_ = c.Send([]byte("<presence type='unavailable'/></stream:stream>"))
		c.Abort()
	}
}

// reconnect resumes the session after the connection failed, retrying (each
// attempt bounded by 3 s) until d has passed; it returns the attempts made.
func (s *smClient) reconnect(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	attempts := 0
	var last error
	addrs := append([]string{s.addr}, s.fallbacks...)
	for time.Now().Before(deadline) {
		attempts++
		if len(addrs) > 1 {
			s.mu.Lock()
			s.addr = addrs[attempts%len(addrs)]
			s.mu.Unlock()
		}
		if _, err := s.resume(s.attemptTimeout); err == nil {
			return attempts, nil
		} else {
			last = err
			if strings.Contains(err.Error(), "resume refused") {
				return attempts, err
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return attempts, fmt.Errorf("%s: not resumed within %s: %w", s.name, d, last)
}

// relogin starts a new session (login through addr and the fallbacks in turn,
// each attempt bounded by 5 s) after the server refused to resume the old one,
// until d has passed; it returns the attempts made.
func (s *smClient) relogin(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	addrs := append([]string{s.addr}, s.fallbacks...)
	var last error
	for attempts := 1; time.Now().Before(deadline); attempts++ {
		s.mu.Lock()
		s.addr = addrs[attempts%len(addrs)]
		s.mu.Unlock()
		if last = s.login(5 * time.Second); last == nil {
			return attempts, nil
		}
		s.event("login via %s failed: %v", s.addr, last)
		time.Sleep(200 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: no new session within %s: %w", s.name, d, last)
}

// collectOffline logs in a second resource with presence, which delivers offline
// storage (where a message goes that found no session): such a message reached the
// user and counts as delivered. It waits until every body of want has come (or d
// has passed: the flush may wait for a raft leader).
func (s *smClient) collectOffline(d time.Duration, want []string) error {
	o := newSMClient(s.name+"-offline", s.ns, s.addr, s.user, s.resource+"-offline", s.logf)
	o.fallbacks = s.fallbacks
	// Through any node that answers (the last one used may be busy or down).
	if _, err := o.relogin(time.Minute); err != nil {
		return err
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		o.mu.Lock()
		n := 0
		for _, b := range want {
			if o.got[b] > 0 {
				n++
			}
		}
		o.mu.Unlock()
		if n == len(want) {
			break
		}
	}
	o.mu.Lock()
	s.mu.Lock()
	for b, n := range o.got {
		if s.got[b] == 0 {
			s.firstAt[b] = o.firstAt[b]
			s.logf("%s: %s came from offline storage", s.name, b)
		}
		s.got[b] += n
	}
	s.mu.Unlock()
	o.mu.Unlock()
	o.close()
	return nil
}

// traffic sends numbered messages from a to b and from b to a until stop is
// closed: a's every period, b's every period too; each asks for an ack every 5.
func traffic(a, b *smClient, period time.Duration, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, p := range []struct {
		from *smClient
		to   string
	}{{a, b.user}, {b, a.user}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(period)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				p.from.msgN++ // numbering goes on across traffic phases
				p.from.message(p.to, fmt.Sprintf("%s-%d", p.from.user, p.from.msgN), 5)
			}
		}()
	}
	return &wg
}

// checkDelivery waits until each side has every message the server acknowledged
// from the other, then collects offline storage for what is still missing; it
// returns what is lost (acknowledged, never delivered).
func checkDelivery(t *testing.T, a, b *smClient) (lost []string, acks [2]uint64) {
	t.Helper()
	for _, c := range []*smClient{a, b} {
		if err := c.syncAcks(60 * time.Second); err != nil {
			t.Error(err)
		}
	}
	_, ackA := a.counts()
	_, ackB := b.counts()
	// The bodies of the messages each server acknowledged (a stanza resent in
	// a new session counts once).
	fromA, fromB := ackedBodies(a, ackA), ackedBodies(b, ackB)
	wantB := func() []string { return b.missing(fromA) }
	wantA := func() []string { return a.missing(fromB) }
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(wantA())+len(wantB()) > 0 {
		time.Sleep(250 * time.Millisecond)
	}
	if w := wantA(); len(w) > 0 {
		if err := a.collectOffline(30*time.Second, w); err != nil {
			t.Logf("%s: offline storage not collected: %v", a.name, err)
		}
	}
	if w := wantB(); len(w) > 0 {
		if err := b.collectOffline(30*time.Second, w); err != nil {
			t.Logf("%s: offline storage not collected: %v", b.name, err)
		}
	}
	return append(wantA(), wantB()...), [2]uint64{uint64(len(fromA)), uint64(len(fromB))}
}

var bodyRe = regexp.MustCompile(`<body>([^<]*)</body>`)

// ackedBodies is the distinct bodies of the messages among the first n
// stanzas c sent (those the server acknowledged), in order.
func ackedBodies(c *smClient, n uint64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for i, st := range c.sent[:min(n, uint64(len(c.sent)))] {
		if slices.ContainsFunc(c.abandoned, func(r [2]int) bool { return i >= r[0] && i < r[1] }) {
			continue
		}
		if m := bodyRe.FindSubmatch(st); m != nil && strings.HasPrefix(string(st), "<message") && !seen[string(m[1])] {
			seen[string(m[1])] = true
			out = append(out, string(m[1]))
		}
	}
	return out
}
