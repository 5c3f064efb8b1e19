package listen

import (
	"io"
	"log/slog"
	"net"
	"testing"
)

// Open opens all or none: with one address taken, the ones before it are closed.
func TestOpenAllOrNone(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	if _, err := Open([]string{freeAddr, taken.Addr().String()}); err == nil {
		t.Fatal("Open succeeded on a taken address")
	}
	ln, err := net.Listen("tcp", freeAddr) // closed again by Open
	if err != nil {
		t.Fatalf("the first address stayed open: %v", err)
	}
	ln.Close()
}

// Serve hands connections to handle, stops when handle says so, and returns
// when the listener is closed.
func TestServeStops(t *testing.T) {
	lns, err := Open([]string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ln := lns[0]
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	got := make(chan net.Conn, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		Serve(ln, log, func(c net.Conn) bool { got <- c; n++; return n < 2 })
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(<-got).Close()
	}
	<-done // handle returned false
	go func() { Serve(ln, log, func(net.Conn) bool { return true }); got <- nil }()
	ln.Close()
	if c := <-got; c != nil {
		t.Fatal("a connection after the close")
	}
}
