package c2s

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the server end with a
// small send buffer: a write larger than that buffer and the peer's receive
// window fills it while the peer does not read.
func tcpPair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv = <-acc
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	if err := srv.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

// In try mode a write the socket cannot take whole returns at once, reporting
// everything written; the rest is spilled, later writes in either mode queue
// behind it, and the peer receives every byte in order.
func TestTryConnSpillsWhatTheSocketRefuses(t *testing.T) {
	srv, cli := tcpPair(t)
	tc := newTryConn(srv)
	if tc == nil {
		t.Fatal("newTryConn: nil for a TCP connection")
	}
	a := bytes.Repeat([]byte("a"), 4<<20)
	b := []byte("bbbb")
	tc.setTry(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n, err := tc.Write(a); n != len(a) || err != nil {
			t.Errorf("try write: %d, %v; want %d, nil", n, err, len(a))
		}
		if !tc.pending() {
			t.Error("4 MiB to a peer that does not read: nothing spilled")
		}
		if n, err := tc.Write(b); n != len(b) || err != nil { // behind the spill, not before it
			t.Errorf("second try write: %d, %v", n, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a write in try mode waited for the peer")
	}
	tc.setTry(false)
	srv.(*net.TCPConn).SetWriteBuffer(4 << 20) // the rest need not crawl
	got := make(chan []byte)
	go func() {
		all, _ := io.ReadAll(cli)
		got <- all
	}()
	if _, err := tc.Write([]byte("cc")); err != nil { // writes the spill first
		t.Fatal(err)
	}
	if tc.pending() {
		t.Fatal("spill left after a waiting write")
	}
	srv.Close()
	want := append(append(append([]byte{}, a...), b...), "cc"...)
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("peer received %d bytes, want %d in order (first difference at %d)", len(all), len(want), firstDiff(all, want))
	}
}

// A socket with room takes a try-mode write whole: nothing spilled.
func TestTryConnWritesWholeWhenThereIsRoom(t *testing.T) {
	srv, cli := tcpPair(t)
	tc := newTryConn(srv)
	tc.setTry(true)
	if n, err := tc.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("try write: %d, %v", n, err)
	}
	tc.setTry(false)
	if tc.pending() {
		t.Fatal("5 bytes to an empty socket were spilled")
	}
	buf := make([]byte, 5)
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cli, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The raw read behaves as the connection's own Read: it waits for data, honours
// the read deadline (a timeout error), returns io.EOF when the peer closes, and
// an error matching net.ErrClosed once the connection is closed. (Read itself
// is the connection's under -race; this tests the raw path in every build.)
func TestTryConnReadsAsTheConnDoes(t *testing.T) {
	srv, cli := tcpPair(t)
	tc := rawReader{newTryConn(srv)}
	buf := make([]byte, 64)
	go func() {
		time.Sleep(20 * time.Millisecond) // Read must wait for it, not fail at once
		cli.Write([]byte("hello"))
	}()
	if n, err := tc.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
	if n, err := tc.Read(buf[:0]); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	tc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := tc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read error %#v: want a *net.OpError for read", err)
	}
	tc.SetReadDeadline(time.Time{})
	cli.Write([]byte("bye"))
	cli.Close()
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read to the end: %q, %v", got, err)
	}
	if n, err := tc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the end: %d, %v; want io.EOF", n, err)
	}
	srv.Close()
	if _, err := tc.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
}

// rawReader reads through tryConn's raw path in every build.
type rawReader struct{ *tryConn }

func (r rawReader) Read(b []byte) (int, error) { return r.readRaw(b) }
