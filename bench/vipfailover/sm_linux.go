//go:build linux

package vipfailover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"xedge/bench/loadgen"
)

const nsSM = "urn:xmpp:sm:3"

// smClient is a client with XEP-0198 stream management on loadgen's raw
// connection. As a receiver it counts the stanzas it gets (its h), answers the
// server's <r/>, records message bodies and resumes its session with <resume/>;
// as a sender it keeps every message it sent and the server's last <a h=.../>, so
// it knows which messages the server took responsibility for.
type smClient struct {
	addr, user, pass, resource string
	dial                       func(func() error) error // runs the dial in the client namespace

	mu     sync.Mutex
	c      *loadgen.Conn
	gen    int
	previd string
	hIn    uint64   // stanzas received since <enabled/>
	sent   []string // message bodies sent since <enabled/> (the sender sends only messages)
	acked  uint64   // the server's last h
	got    map[string]int
	// bounced: bodies of the messages the server returned as errors (a
	// sender's view: a bounced message was acknowledged, then not delivered,
	// and the sender was told), with the error's condition.
	bounced map[string]string
	iqs     map[string]chan struct{} // iq ids waited for
	dead    chan struct{}            // closed when the current connection's reader ends
}

func newSMClient(addr, user, pass, resource string, dial func(func() error) error) *smClient {
	return &smClient{addr: addr, user: user, pass: pass, resource: resource, dial: dial,
		got: map[string]int{}, bounced: map[string]string{}, iqs: map[string]chan struct{}{}}
}

func (s *smClient) auth(timeout time.Duration) (*loadgen.Conn, error) {
	var c *loadgen.Conn
	err := s.dial(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		if c, err = loadgen.Dial(ctx, loadgen.Options{Addr: s.addr, Domain: domain, Timeout: timeout, Resource: s.resource}); err != nil {
			return err
		}
		if err = c.Auth(s.user, s.pass); err != nil {
			c.Abort()
		}
		return err
	})
	return c, err
}

// login binds, sends initial presence and enables resumable stream management.
func (s *smClient) login(timeout time.Duration) error {
	c, err := s.auth(timeout)
	if err != nil {
		return err
	}
	if err := c.Bind(); err != nil {
		c.Abort()
		return err
	}
	if err := c.Send([]byte("<presence/><enable xmlns='" + nsSM + "' resume='true'/>")); err != nil {
		c.Abort()
		return err
	}
	for range 10000 { // offline messages may come before <enabled/>
		el, err := c.Next()
		if err != nil {
			c.Abort()
			return fmt.Errorf("enable: %w", err)
		}
		switch string(loadgen.Name(el)) {
		case "enabled":
			id := string(loadgen.Attr(el, "id"))
			if id == "" || string(loadgen.Attr(el, "resume")) != "true" {
				c.Abort()
				return fmt.Errorf("stream management without resumption: %.200q", el)
			}
			s.mu.Lock()
			s.previd = id
			s.attachLocked(c)
			s.mu.Unlock()
			return nil
		case "failed":
			c.Abort()
			return fmt.Errorf("enable failed: %.200q", el)
		case "presence", "message", "iq":
			// Before <enabled/>: not counted.
		}
	}
	c.Abort()
	return errors.New("no <enabled/>")
}

// errRefused marks a resumption the server answered with <failed/>.
var errRefused = errors.New("resume refused")

// resume authenticates on a new connection and resumes the session.
func (s *smClient) resume(timeout time.Duration) error {
	c, err := s.auth(timeout)
	if err != nil {
		return err
	}
	s.mu.Lock()
	req := fmt.Sprintf("<resume xmlns='%s' h='%d' previd='%s'/>", nsSM, s.hIn, s.previd)
	s.mu.Unlock()
	_ = c.SetDeadline(time.Now().Add(timeout + 10*time.Second)) // the server may wait for the kill to be detected
	if err := c.Send([]byte(req)); err != nil {
		c.Abort()
		return err
	}
	el, err := c.Next()
	if err != nil {
		c.Abort()
		return fmt.Errorf("resume: %w", err)
	}
	if string(loadgen.Name(el)) != "resumed" {
		c.Abort()
		return fmt.Errorf("%w: %.300q", errRefused, el)
	}
	h, _ := strconv.ParseUint(string(loadgen.Attr(el, "h")), 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if h > s.acked {
		s.acked = h
	}
	s.attachLocked(c)
	return nil
}

func (s *smClient) attachLocked(c *loadgen.Conn) {
	s.c = c
	s.gen++
	s.dead = make(chan struct{})
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	go s.read(c, s.gen, s.dead)
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
			s.mu.Unlock()
			c.Abort()
			return
		}
		s.mu.Lock()
		switch string(loadgen.Name(el)) {
		case "message", "presence", "iq":
			s.hIn++
			if b := loadgen.Child(el, "body"); b != nil {
				if string(loadgen.Attr(el, "type")) != "error" {
					s.got[loadgen.Text(b)]++
				} else {
					s.bounced[loadgen.Text(b)] = errorCondition(el)
				}
			}
			if string(loadgen.Name(el)) == "iq" {
				id := string(loadgen.Attr(el, "id"))
				if ch := s.iqs[id]; ch != nil {
					close(ch)
					delete(s.iqs, id)
				}
			}
		case "r":
			_ = c.Send(fmt.Appendf(nil, "<a xmlns='%s' h='%d'/>", nsSM, s.hIn))
		case "a":
			if h, _ := strconv.ParseUint(string(loadgen.Attr(el, "h")), 10, 64); h > s.acked {
				s.acked = h
			}
		}
		s.mu.Unlock()
	}
}

// ping sends an XEP-0199 ping on the current connection and waits for its answer.
func (s *smClient) ping(d time.Duration) error {
	s.mu.Lock()
	c := s.c
	if c == nil {
		s.mu.Unlock()
		return errors.New("not connected")
	}
	id := c.NextID()
	ch := make(chan struct{})
	s.iqs[id] = ch
	err := c.Send([]byte("<iq type='get' id='" + id + "' to='" + domain + "'><ping xmlns='urn:xmpp:ping'/></iq>"))
	dead := s.dead
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-dead:
		return errors.New("connection lost before the ping was answered")
	case <-time.After(d):
		return fmt.Errorf("ping not answered within %s", d)
	}
}

// message sends body to jid and asks for an acknowledgement.
func (s *smClient) message(to, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, body)
	if s.c != nil {
		_ = s.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_ = s.c.Send([]byte("<message to='" + to + "' type='chat'><body>" + body + "</body></message><r xmlns='" + nsSM + "'/>"))
	}
}

// syncAcks asks for acknowledgements until every message sent is acknowledged.
func (s *smClient) syncAcks(d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s.mu.Lock()
		done := s.acked >= uint64(len(s.sent))
		if s.c != nil && !done {
			_ = s.c.Send([]byte("<r xmlns='" + nsSM + "'/>"))
		}
		s.mu.Unlock()
		if done {
			return nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("the server acknowledged %d of %d messages within %s", s.acked, len(s.sent), d)
}

// ackedBodies is the bodies of the messages the server acknowledged.
func (s *smClient) ackedBodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent[:min(int(s.acked), len(s.sent))]...)
}

// missing lists the bodies not received (yet); dups counts bodies received twice or more.
func (s *smClient) missing(bodies []string) (missing []string, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range bodies {
		switch n := s.got[b]; {
		case n == 0:
			missing = append(missing, b)
		case n > 1:
			dups += n - 1
		}
	}
	return missing, dups
}

func (s *smClient) deadCh() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// collect logs in without stream management (so no session of it lingers,
// resumable, to take later messages), sends initial presence, records the
// bodies of the messages that come (offline storage is flushed on presence)
// until a ping sent after the presence is answered, and ends the session.
func (s *smClient) collect(timeout time.Duration) error {
	c, err := s.auth(timeout)
	if err != nil {
		return err
	}
	defer c.Abort()
	if err := c.Bind(); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := c.Send([]byte("<presence/>")); err != nil {
		return err
	}
	err = c.Ping(func(el []byte) error {
		if string(loadgen.Name(el)) == "message" && string(loadgen.Attr(el, "type")) != "error" {
			if b := loadgen.Child(el, "body"); b != nil {
				s.mu.Lock()
				s.got[loadgen.Text(b)]++
				s.mu.Unlock()
			}
		}
		return nil
	})
	_ = c.Send([]byte("<presence type='unavailable'/></stream:stream>"))
	return err
}

// close ends the stream (and with it the session) and the connection.
func (s *smClient) close() {
	s.mu.Lock()
	c := s.c
	s.c = nil
	s.gen++
	s.mu.Unlock()
	if c != nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.Send([]byte("<presence type='unavailable'/></stream:stream>"))
		c.Abort()
	}
}

// smRun is the resumption measurement of one kill: the resuming client (through
// the VIP) and the sender (on a surviving node).
type smRun struct {
	h        *harness
	rx, tx   *smClient
	stopSend chan struct{}
	sendDone chan struct{}
	once     sync.Once
	// settle, when set, runs after the resumption and before the accounting.
	settle func()
}

func (h *harness) startSM(victim *node, i int) (*smRun, error) {
	r := &smRun{h: h, stopSend: make(chan struct{}), sendDone: make(chan struct{})}
	r.rx = newSMClient(vipAddr, "bench", "secret", "sm", h.inClient)
	if err := r.rx.login(10 * time.Second); err != nil {
		return nil, fmt.Errorf("stream management login through the VIP: %w", err)
	}
	var via *node
	for _, n := range h.nodes {
		if n != victim {
			via = n
			break
		}
	}
	r.tx = newSMClient(via.ip+":5222", "sender", "secret", "tx", h.inClient)
	if err := r.tx.login(10 * time.Second); err != nil {
		r.rx.close()
		return nil, fmt.Errorf("sender login on %s: %w", via.name, err)
	}
	go func() { // a message every 25 ms, each followed by <r/>
		defer close(r.sendDone)
		for n := 1; ; n++ {
			r.tx.message("bench@"+domain+"/sm", fmt.Sprintf("k%d-m%d", i+1, n))
			select {
			case <-r.stopSend:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return r, nil
}

func (r *smRun) stopSending() {
	r.once.Do(func() { close(r.stopSend) })
	<-r.sendDone
}

func (r *smRun) stop() {
	r.stopSending()
	r.tx.close()
	r.rx.close()
}

// keepResumed makes sure the resuming client's session is connected and
// answers a ping, resuming it again (for at most 30 s) if its connection
// failed after the measured resumption. A refused resumption ends it: the
// session was closed and what it held was routed (offline storage).
func (r *smRun) keepResumed(k *Kill) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.rx.mu.Lock()
		connected := r.rx.c != nil
		r.rx.mu.Unlock()
		if connected && r.rx.ping(5*time.Second) == nil {
			return nil
		}
		k.Reresumes++
		err := r.rx.resume(time.Second)
		if errors.Is(err, errRefused) || (err != nil && time.Now().After(deadline)) {
			return err
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// resumeWait bounds the wait for a resumed session's first ping answer and for
// the sender's acknowledgements (a wedged server is reported, not waited for).
const resumeWait = 150 * time.Second

// measure waits for the resuming client's connection to fail, resumes the
// session through the VIP (retrying until 30 s after the kill), times <resumed/>
// plus an answered ping, then accounts for every message the server acknowledged.
func (r *smRun) measure(k *Kill, t0 time.Time, i int) error {
	select {
	case <-r.rx.deadCh():
	case <-time.After(30 * time.Second):
		return errors.New("the resuming client's connection did not fail within 30 s")
	}
	for {
		k.Resumes++
		err := r.rx.resume(time.Second)
		if err == nil {
			if err = r.rx.ping(resumeWait); err == nil {
				k.Resumed = time.Since(t0).Seconds()
				break
			}
			return fmt.Errorf("resumed after %.3f s, but: %w", time.Since(t0).Seconds(), err)
		}
		r.h.logf("kill %d: resumption attempt %d failed at %.3f s: %v", i+1, k.Resumes, time.Since(t0).Seconds(), err)
		if errors.Is(err, errRefused) {
			return err
		}
		if time.Since(t0) > 30*time.Second {
			return fmt.Errorf("not resumed within 30 s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Messages keep coming for a moment after the resumption; then every message
	// the server acknowledged must have reached the user.
	time.Sleep(300 * time.Millisecond)
	if r.settle != nil {
		r.settle()
	}
	r.stopSending()
	if err := r.tx.syncAcks(resumeWait); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	// A client resumes whenever its connection fails; so does this one
	// before the accounting (the VIP may have moved again after a heal, or a
	// loaded node dropped it): what the server queued for it comes then.
	if err := r.keepResumed(k); err != nil {
		r.h.logf("kill %d: resuming again before the accounting: %v", i+1, err)
	}
	acked := r.tx.ackedBodies()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if missing, _ := r.rx.missing(acked); len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	missing, dups := r.rx.missing(acked)
	k.MsgAcked, k.MsgReceived, k.MsgDups = len(acked), len(acked)-len(missing), dups
	r.tx.mu.Lock()
	k.MsgSent = len(r.tx.sent)
	r.tx.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	// Not lost if the server stored them offline: a login with presence gets them.
	off := newSMClient(vipAddr, "bench", "secret", "offline", r.h.inClient)
	if err := off.collect(10 * time.Second); err != nil {
		return fmt.Errorf("offline collection: %w", err)
	}
	still, _ := off.missing(missing)
	k.MsgOffline, k.MsgLost = len(missing)-len(still), len(still)
	if len(still) > 0 {
		conds := r.tx.bouncedOf(still)
		k.MsgBounced = len(conds)
		r.h.logf("kill %d: %d of %d acknowledged messages reached neither the resumed session nor offline storage (first: %v); %d of them came back to the sender as errors %v",
			i+1, len(still), len(acked), still[:min(5, len(still))], len(conds), conds)
		r.h.logEvidence(t0)
	}
	return nil
}

// bouncedOf returns, for those of bodies the server returned to this client as
// errors, the error conditions and how many had each.
func (s *smClient) bouncedOf(bodies []string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, b := range bodies {
		if c, ok := s.bounced[b]; ok {
			out[c]++
		}
	}
	return out
}

// errorCondition is the defined condition of a stanza error (the first child
// of <error/> in the stanzas namespace), or "?".
func errorCondition(el []byte) string {
	e := loadgen.Child(el, "error")
	if e == nil {
		return "?"
	}
	for _, c := range stanzaConditions {
		if loadgen.Child(e, c) != nil {
			if t := loadgen.Child(e, "text"); t != nil {
				return c + " (" + loadgen.Text(t) + ")"
			}
			return c
		}
	}
	return "?"
}

// stanzaConditions are RFC 6120 §8.3.3's defined conditions.
var stanzaConditions = []string{"bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
	"internal-server-error", "item-not-found", "jid-malformed", "not-acceptable", "not-allowed", "not-authorized",
	"policy-violation", "recipient-unavailable", "redirect", "registration-required", "remote-server-not-found",
	"remote-server-timeout", "resource-constraint", "service-unavailable", "subscription-required",
	"undefined-condition", "unexpected-request"}

// evidenceLines bounds what logEvidence writes per node.
const evidenceLines = 80

// logEvidence writes, for every node, the lines of its log from 2 s before t0
// on that say where the resuming client's messages went: warnings and errors,
// and lines naming the resuming user, offline storage or a bounce (the
// re-routing of each stanza a lost node had not acknowledged is counted, not
// listed). A failed run of the test keeps no work directory: this is its record.
func (h *harness) logEvidence(t0 time.Time) {
	for _, n := range h.nodes {
		b, err := os.ReadFile(filepath.Join(h.opt.Dir, n.name+".log"))
		if err != nil {
			h.logf("evidence: %s: %v", n.name, err)
			continue
		}
		var out []string
		rerouted := 0
		for _, line := range strings.Split(string(b), "\n") {
			ts, ok := strings.CutPrefix(line, "time=")
			if !ok {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, strings.SplitN(ts, " ", 2)[0])
			if err != nil || at.Before(t0.Add(-2*time.Second)) {
				continue
			}
			switch {
			case strings.Contains(line, "routing it again"):
				rerouted++
			case strings.Contains(line, "level=WARN"), strings.Contains(line, "level=ERROR"),
				strings.Contains(line, "bench@"), strings.Contains(line, "offline"), strings.Contains(line, "bounc"),
				strings.Contains(line, "node lost"), strings.Contains(line, "resum"):
				out = append(out, line)
			}
		}
		if len(out) > evidenceLines {
			out = append(out[:evidenceLines/2], append([]string{"..."}, out[len(out)-evidenceLines/2:]...)...)
		}
		h.logf("evidence: %s from %s (stanzas routed again: %d):\n%s", n.name, t0.Add(-2*time.Second).UTC().Format(time.RFC3339Nano), rerouted, strings.Join(out, "\n"))
	}
}
