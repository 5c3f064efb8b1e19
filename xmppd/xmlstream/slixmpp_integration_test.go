//go:build integration

package xmlstream

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"xedge/xmppd/internal/testenv"
)

// slixmppClient is a real client (python3-slixmpp) that connects without TLS, sends
// nothing but its stream header, reacts to our features and disconnects.
const slixmppClient = `
import sys, asyncio, logging
import slixmpp
logging.basicConfig(level=logging.ERROR)
port = int(sys.argv[1])
c = slixmpp.ClientXMPP('romeo@localhost/orchard', 'secret')
c['feature_mechanisms'].unencrypted_plain = True
c.enable_starttls = False
c.enable_direct_tls = False
c.enable_plaintext = True
def failed(event):
    c.disconnect()
c.add_event_handler('failed_all_auth', failed)
c.add_event_handler('no_auth', failed)
c.add_event_handler('session_start', lambda e: c.disconnect())
c.connect(('127.0.0.1', port))
c.loop.run_until_complete(asyncio.wait_for(c.disconnected, 20))
`

// TestSlixmppClientStream decodes what a real client library sends: its stream
// header, and (after our features offer no way to log in) its closing tag.
func TestSlixmppClientStream(t *testing.T) {
	py := testenv.Python
	testenv.NeedSlixmpp(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	script := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(slixmppClient), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v\n%s", err, out.String())
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	d := NewDecoder(conn, DefaultLimits())
	h, err := d.StreamHeader()
	if err != nil {
		t.Fatalf("client header: %v\n%s", err, out.String())
	}
	if h.Attr("to") != "localhost" || h.Attr("version") != "1.0" || d.DefaultNS() != NSClient {
		t.Fatalf("client header %s, default namespace %q", dump(h), d.DefaultNS())
	}
	reply := AppendStreamHeader(nil, NSClient, Attr{Local: "from", Value: "localhost"}, Attr{Local: "id", Value: "s1"}, Attr{Local: "version", Value: "1.0"})
	reply = AppendElement(reply, New(NSStream, "features").Append(New("urn:ietf:params:xml:ns:xmpp-sasl", "mechanisms").Append(
		New("urn:ietf:params:xml:ns:xmpp-sasl", "mechanism").AppendText("X-NONE"))), NSClient)
	if _, err := conn.Write(reply); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		e, err := d.Next()
		if err == io.EOF {
			conn.Write([]byte(StreamClose))
			return
		}
		if err != nil {
			t.Fatalf("after features: %v\n%s", err, out.String())
		}
		t.Logf("client sent %s", e)
	}
	t.Fatalf("client did not close its stream\n%s", out.String())
}
