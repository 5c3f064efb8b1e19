package websocket

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The adapter end to end: a read deadline only stops waiting (the stream goes
// on), <open/> arrives as a stream header, the server's bytes leave as one
// element per message, and a client without the xmpp subprotocol is refused.
func TestHandlerAdapter(t *testing.T) {
	served := make(chan error, 1)
	timedOut := make(chan struct{})
	ts := httptest.NewServer(Handler(Options{Serve: func(nc net.Conn, secure bool) error {
		served <- func() error {
			defer nc.Close()
			if !secure {
				return errors.New("loopback stream not secure")
			}
			nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			buf := make([]byte, 4096)
			if _, err := nc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				return errors.New("read deadline not honoured: " + errString(err))
			}
			close(timedOut)
			nc.SetReadDeadline(time.Time{})
			n, err := nc.Read(buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "<stream:stream ") {
				return errors.New("header: " + string(buf[:n]) + errString(err))
			}
			_, err = nc.Write([]byte("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' version='1.0'><stream:features/><message to='x@y'><body>hi</body></message></stream:stream>"))
			return err
		}()
		return nil
	}}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + Path

	// no subprotocol: refused
	if c, _, err := websocket.Dial(ctx, url, nil); err == nil {
		if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Errorf("no subprotocol: %v", err)
		}
		c.CloseNow()
	}

	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"xmpp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	select { // the server's first read times out before anything is sent
	case <-timedOut:
	case err := <-served:
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='y' version='1.0'/>")); err != nil {
		t.Fatal(err)
	}
	want := []string{"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='1' version='1.0'/>",
		"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
		"<message xmlns='jabber:client' to='x@y'><body>hi</body></message>",
		"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"}
	for _, w := range want {
		_, b, err := c.Read(ctx)
		if err != nil || string(b) != w {
			t.Fatalf("got %q %v, want %q", b, err, w)
		}
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}
