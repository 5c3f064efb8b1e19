package loadgen

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestRxStampIsArrival: the stamp of a read is when the bytes reached the
// socket, not when they were read: data written, then read 200 ms later,
// carries a stamp within a few ms of the write. Read deadlines and EOF work as
// on a plain connection.
func TestRxStampIsArrival(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRxConn(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	defer srv.Close()

	_ = r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing sent: %v, want a deadline error", err)
	}
	_ = r.SetReadDeadline(time.Time{})

	before := time.Now().UnixNano()
	if _, err := srv.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixNano()
	time.Sleep(200 * time.Millisecond)
	buf := make([]byte, 10)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	read := time.Now().UnixNano()
	if r.stamp < before || r.stamp > after+int64(20*time.Millisecond) {
		t.Fatalf("stamp %d ns after the write began (write took %d ns, read %d ns after it)", r.stamp-before, after-before, read-before)
	}
	srv.Close()
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want EOF", n, err)
	}
}
