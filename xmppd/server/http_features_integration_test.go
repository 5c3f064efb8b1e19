//go:build integration

package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"mellium.im/sasl"

	"xedge/xmppd/internal/testenv"
)

// uploadScript: alice (slixmpp, xep_0363) finds the upload service through
// disco, uploads a 50000-byte file and prints its GET URL; a slot for a file
// over upload-max-size is refused with <file-too-large/> carrying the limit;
// XEP-0215 lists the configured STUN/TURN servers. argv: path-of-file.
const uploadScript = routingLib + `
from slixmpp.exceptions import IqError
path = sys.argv[1]

async def main():
    a = await C('alice', 'up', X.PORT, ['xep_0030', 'xep_0128', 'xep_0363']).start(presence=False, roster=False)
    # slixmpp's own find_upload_service breaks on Python 3.11 (asyncio.wait on
    # coroutines): discover the service the same way by hand.
    items = await a.c['xep_0030'].get_items(jid=X.DOMAIN, timeout=10)
    svcs = [i[0] for i in items['disco_items']['items'] if i[0].startswith('upload.')]
    assert svcs, items
    info = await a.c['xep_0030'].get_info(jid=svcs[0], timeout=10)
    assert 'urn:xmpp:http:upload:0' in info['disco_info']['features'], info
    size = None
    for form in info['disco_info'].iterables:
        v = form['values']
        if v.get('FORM_TYPE') == ['urn:xmpp:http:upload:0']:
            size = int(v['max-file-size'])
    assert size == 100000, info
    a.c['xep_0363'].upload_service = info['from']
    a.c['xep_0363'].max_file_size = size
    ok('discovered')
    url = await a.c['xep_0363'].upload_file(path, content_type='image/png', timeout=10)
    print('GETURL', url)
    ok('uploaded')
    svc = a.c['xep_0363'].upload_service
    try:
        await a.c['xep_0363'].request_slot(svc, 'big.bin', 200001, 'application/octet-stream', timeout=10)
        raise RuntimeError('slot for a too large file granted')
    except IqError as e:
        x = str(e.iq)
        assert e.iq['error']['condition'] == 'not-acceptable', x
        assert 'file-too-large' in x and '<max-file-size>100000</max-file-size>' in x, x
    ok('too-large')
    # the stream still serves
    await a.c['xep_0030'].get_info(jid=X.DOMAIN, timeout=10)
    ok('still-serving')
    # XEP-0215: the configured STUN/TURN servers, TURN with credentials
    iq = a.c.Iq()
    iq['type'] = 'get'
    iq['to'] = X.DOMAIN
    iq.append(ET.fromstring("<services xmlns='urn:xmpp:extdisco:2'/>"))
    r = str(await iq.send(timeout=10))
    assert "host=\"stun.example.org\"" in r and "host=\"turn.example.org\"" in r and ":alice\"" in r and "password=" in r, r
    ok('extdisco')
    await X.stop(a.c)

X.run(main, 40)
`

// wsPeerScript: bob logs in over TCP (slixmpp), says ready, answers the first
// chat message with "pong: BODY". argv: none. He tells alice (bare JID:
// delivered now or from offline storage) he is ready.
const wsPeerScript = routingLib + `
async def main():
    b = await C('bob', 'tcp', X.PORT).start()
    b.c.send_message(mto='alice@localhost', mbody='ready', mtype='chat')
    ok('bob-online')
    m = await b.expect(lambda k, d: k == 'message' and d['body'].startswith('ping'), 'ping over websocket', timeout=20)
    b.c.send_message(mto=m[1]['from'], mbody='pong: ' + m[1]['body'], mtype='chat')
    await b.expect(body('bye'), 'bye', timeout=20)
    ok('bob-done')
    await X.stop(b.c)

X.run(main, 40)
`

var getURLRE = regexp.MustCompile(`GETURL (\S+)`)

// HTTP upload (XEP-0363) with slixmpp against --http: the file comes back
// byte-exact with its content type and CORS headers, a too-large slot is
// refused, the file is where upload-dir says. Then XMPP over WebSocket (RFC
// 7395): a coder/websocket client logs in with SCRAM-SHA-256 and exchanges
// messages with a slixmpp TCP client; host-meta (XEP-0156) lists the URL.
func TestHTTPUploadAndWebSocket(t *testing.T) {
	testenv.NeedSlixmpp(t)
	start := time.Now()
	t.Cleanup(func() { t.Logf("total with cleanup: %v", time.Since(start)) })
	httpAddr := testenv.FreeAddr(t, "127.0.0.1")
	dir := t.TempDir()
	s := testenv.Start(t, testenv.Options{Args: []string{"--http", httpAddr, "--http-tls=false",
		"--upload-dir", dir, "--upload-max-size", "100000", "--upload-quota", "1000000",
		"--ext-services", "stun:stun.example.org:3478/udp,turn:turn.example.org:3478/udp", "--ext-services-secret", "s3cret"}})
	s.Register(t, "alice", "secret", "bob", "secret")
	t.Logf("xmppd started: %v", time.Since(start))

	data := make([]byte, 50000)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	src := filepath.Join(t.TempDir(), "photo 1.png")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out := s.RunPython(t, 45*time.Second, uploadScript, src)
	t.Logf("upload script: %v", time.Since(t0))
	for _, step := range []string{"discovered", "uploaded", "too-large", "still-serving", "extdisco"} {
		if !strings.Contains(out, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, out)
		}
	}
	m := getURLRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no GET URL:\n%s", out)
	}
	get := m[1]
	if !strings.HasPrefix(get, "http://"+httpAddr+"/upload/") {
		t.Fatalf("GET URL %s", get)
	}
	req, _ := http.NewRequest("GET", get, nil)
	req.Header.Set("Origin", "https://web.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("GET: %d, %d bytes, equal %v", resp.StatusCode, len(got), bytes.Equal(got, data))
	}
	if ct, acao := resp.Header.Get("Content-Type"), resp.Header.Get("Access-Control-Allow-Origin"); ct != "image/png" || acao != "*" {
		t.Errorf("GET headers: Content-Type %q, Access-Control-Allow-Origin %q", ct, acao)
	}
	req, _ = http.NewRequest("OPTIONS", get, nil)
	req.Header.Set("Origin", "https://web.example")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	// the file is in upload-dir, byte-exact
	sum := sha256.Sum256(data)
	found := false
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() == "photo 1.png" {
			b, _ := os.ReadFile(p)
			found = sha256.Sum256(b) == sum
		}
		return nil
	})
	if !found {
		t.Errorf("uploaded file not found byte-exact in upload-dir %s", dir)
	}

	// host-meta (XEP-0156)
	wsURL := "ws://" + httpAddr + "/xmpp-websocket"
	for _, p := range []string{"/.well-known/host-meta", "/.well-known/host-meta.json"} {
		resp, err := http.Get("http://" + httpAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "urn:xmpp:alt-connections:websocket") || !strings.Contains(string(b), wsURL) {
			t.Errorf("%s: %s", p, b)
		}
	}

	// WebSocket: bob on TCP (slixmpp), alice over WebSocket.
	peer := make(chan string, 1)
	go func() {
		r := s.Python(45*time.Second, wsPeerScript)
		peer <- r.Output + "\n" + errString(r.Err)
	}()
	t0 = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{"xmpp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != "xmpp" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	send := func(s string) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// recv returns the next message containing want; every message must be one
	// element with its namespace declared (RFC 7395 §3.3.3).
	recv := func(want string) string {
		t.Helper()
		for i := 0; i < 50; i++ {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			msg := string(b)
			if !strings.HasPrefix(msg, "<") || !strings.Contains(strings.SplitN(msg, ">", 2)[0], "xmlns") {
				t.Errorf("message without its namespace: %s", msg)
			}
			if strings.Contains(msg, want) {
				return msg
			}
		}
		t.Fatalf("no message with %q", want)
		return ""
	}
	open := "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
	send(open)
	recv("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
	f := recv("stream:features")
	if !strings.Contains(f, "SCRAM-SHA-256") || strings.Contains(f, "starttls") {
		t.Fatalf("features over a loopback websocket: %s", f)
	}
	c := sasl.NewClient(sasl.ScramSha256, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte("alice"), []byte("secret"), nil }))
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	ch := recv("challenge")
	chB, err := base64.StdEncoding.DecodeString(textOf(ch))
	if err != nil {
		t.Fatalf("challenge %s: %v", ch, err)
	}
	_, final, err := c.Step(chB)
	if err != nil {
		t.Fatal(err)
	}
	send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</response>")
	succ := recv("success")
	sb, _ := base64.StdEncoding.DecodeString(textOf(succ))
	if _, _, err := c.Step(sb); err != nil {
		t.Fatalf("server signature: %v", err)
	}
	send(open)
	recv("<open ")
	recv("bind")
	send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
	recv("alice@localhost/web")
	send("<presence xmlns='jabber:client'/>")
	recv("<body>ready</body>")
	t.Logf("websocket logged in, peer ready: %v", time.Since(t0))
	send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='m1'><body>ping 1</body></message>")
	recv("pong: ping 1")
	send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat' id='m2'><body>bye</body></message>")
	send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
	recv("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
	t.Logf("websocket closed: %v", time.Since(t0))
	po := <-peer
	t.Logf("peer done: %v", time.Since(t0))
	for _, step := range []string{"bob-online", "bob-done"} {
		if !strings.Contains(po, "OK "+step+"\n") {
			t.Errorf("peer step %s not passed:\n%s", step, po)
		}
	}
}

func textOf(el string) string {
	i := strings.Index(el, ">")
	j := strings.LastIndex(el, "</")
	if i < 0 || j < i {
		return ""
	}
	return el[i+1 : j]
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
