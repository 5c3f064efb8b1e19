package dns

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// ignoringPrimary is a fake primary that answers NOERROR to signed updates and
// applies none of them (PowerDNS's behaviour when updates are not enabled).
// It is a fake for a unit test of our own logic; TestBINDUpdates is the proof
// against a real server.
func ignoringPrimary(t *testing.T, key TSIGKey, bumpSerial bool) (string, *int) {
	t.Helper()
	var mu sync.Mutex
	updates := 0
	serial := uint32(1)
	pc, ln, err := listenBoth("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if r.Opcode == mdns.OpcodeUpdate {
			mu.Lock()
			updates++
			if bumpSerial { // as if applied and at once overwritten by another writer
				serial += 2
			}
			mu.Unlock()
			if r.IsTsig() != nil && w.TsigStatus() == nil {
				m.SetTsig(key.Name, key.Algorithm, 300, time.Now().Unix())
			} else {
				m.Rcode = mdns.RcodeNotAuth
			}
		} else if r.Question[0].Qtype == mdns.TypeSOA {
			mu.Lock()
			m.Answer = append(m.Answer, &mdns.SOA{Hdr: mdns.RR_Header{Name: "example.org.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 30},
				Ns: "ns.example.org.", Mbox: "h.example.org.", Serial: serial, Minttl: 30})
			mu.Unlock()
		}
		w.WriteMsg(m)
	})
	srv := &mdns.Server{Listener: ln, Handler: h, TsigSecret: map[string]string{key.Name: key.Secret},
		MsgAcceptFunc: func(mdns.Header) mdns.MsgAcceptAction { return mdns.MsgAccept }}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String(), &updates
}

func TestUpdateIgnoredIsReported(t *testing.T) {
	key := TSIGKey{Name: "k.", Algorithm: mdns.HmacSHA256, Secret: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}
	addr, updates := ignoringPrimary(t, key, false)
	p := NewPusher(PusherConfig{Server: addr, Zone: "example.org", Key: key, Domain: "example.org",
		HostSuffix: []string{"node.example.org", "vip.example.org"}})
	want := NewBuilder(testParams()).Build(View{Nodes: []Node{node("n1", "10.0.0.1", 0)}}).RRs
	_, err := p.Reconcile(context.Background(), want)
	if !errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "PowerDNS") {
		t.Fatalf("err = %v, want ErrNotApplied naming the likely cause", err)
	}
	if *updates != 1 {
		t.Fatalf("%d updates sent", *updates)
	}

	// Through the publisher: one log line, status "not-applied", retried.
	var logs bytes.Buffer
	var lmu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { lmu.Lock(); defer lmu.Unlock(); return logs.Write(b) })
	pub := NewPublisher(PublisherConfig{Params: testParams(), Pusher: p, MaxBackoff: 200 * time.Millisecond,
		Source: func() View { return View{Nodes: []Node{node("n1", "10.0.0.1", 0)}} },
		Log:    slog.New(slog.NewTextHandler(w, nil))})
	pub.Start(context.Background())
	defer pub.Stop(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for pub.Status().Update.Failures < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no retries: %+v", pub.Status().Update)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := pub.Status().Update; st.LastResult != "not-applied" || st.LastSuccess != (time.Time{}) {
		t.Errorf("status %+v", st)
	}
	lmu.Lock()
	defer lmu.Unlock()
	if n := strings.Count(logs.String(), "dns update failed"); n != 1 {
		t.Errorf("%d log lines for one repeated failure:\n%s", n, logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestUpdateOverwrittenIsConcurrent: the records differ after the update but
// the serial moved: another writer, not an ignoring server.
func TestUpdateOverwrittenIsConcurrent(t *testing.T) {
	key := TSIGKey{Name: "k.", Algorithm: mdns.HmacSHA256, Secret: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}
	addr, _ := ignoringPrimary(t, key, true)
	p := NewPusher(PusherConfig{Server: addr, Zone: "example.org", Key: key, Domain: "example.org",
		HostSuffix: []string{"node.example.org", "vip.example.org"}})
	want := NewBuilder(testParams()).Build(View{Nodes: []Node{node("n1", "10.0.0.1", 0)}}).RRs
	_, err := p.Reconcile(context.Background(), want)
	if !errors.Is(err, ErrConcurrent) || errors.Is(err, ErrNotApplied) || !strings.Contains(err.Error(), "from serial 1 to 3") {
		t.Fatalf("err = %v, want ErrConcurrent", err)
	}
}
