package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortsBelowEphemeralRangeAndNeverTwice(t *testing.T) {
	hi := EphemeralLow()
	seen := map[int]bool{}
	for range 300 {
		p, err := TCP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

// The port of a :0 listener (what a server under test binds) is never one handed
// out here: that was the collision.
func TestEphemeralBindNeverLandsOnAHandedPort(t *testing.T) {
	p, err := TCP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if got == p || got < EphemeralLow() {
			t.Fatalf(":0 bind got %d (handed %d, ephemeral range from %d)", got, p, EphemeralLow())
		}
	}
}

func TestAddrAndTCPUDPAreBindable(t *testing.T) {
	a, err := Addr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("Addr %s: %v", a, err)
	}
	l.Close()

	p, err := TCPUDP("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("TCPUDP %d, udp: %v", p, err)
	}
	pc.Close()
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCPUDP %d, tcp: %v", p, err)
	}
	l.Close()
}

// A port someone holds is not handed out.
func TestBusyPortSkipped(t *testing.T) {
	hi := EphemeralLow()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	// Hold a range of ports and mark everything else as handed, so that only
	// held ports remain to be picked: pick must fail, not return a busy one.
	mu.Lock()
	saved := handed
	handed = map[int]bool{}
	for p := lowest; p < hi; p++ {
		handed[p] = true
	}
	for p := lowest; p < lowest+20; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // someone else's: just as busy
		}
		held = append(held, l)
		delete(handed, p)
	}
	mu.Unlock()
	defer func() { mu.Lock(); handed = saved; mu.Unlock() }()
	if p, err := TCP("127.0.0.1"); err == nil {
		t.Fatalf("got busy port %d", p)
	}
}

func TestPair(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := Pair("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []int{p, p + 1} {
			if seen[q] || q >= EphemeralLow() {
				t.Fatalf("pair %d: port %d handed twice or in the ephemeral range", p, q)
			}
			seen[q] = true
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(q))
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			pc.Close()
		}
		// A single port handed later never falls on either of the pair.
		s, err := TCP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("TCP handed %d, part of a pair", s)
		}
		seen[s] = true
	}
}
