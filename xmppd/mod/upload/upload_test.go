package upload

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// host is the part of module.Host the service uses: Route and HandleDomain.
type host struct {
	module.Host
	mu       sync.Mutex
	handler  module.DomainHandler            // the last one registered
	handlers map[string]module.DomainHandler // per service domain
	out      []*xmlstream.Element
}

func (h *host) HandleDomain(d string, fn module.DomainHandler) {
	if h.handlers == nil {
		h.handlers = map[string]module.DomainHandler{}
	}
	h.handler, h.handlers[d] = fn, fn
}
func (h *host) SetRemoteRoute(module.DomainHandler) {}
func (h *host) ServedDomains() []string             { return nil }
func (h *host) Route(_ context.Context, st *xmlstream.Element) {
	h.mu.Lock()
	h.out = append(h.out, st)
	h.mu.Unlock()
}

// ask sends an IQ from user to the service and returns the reply.
func (h *host) ask(t *testing.T, from string, payload *xmlstream.Element) *xmlstream.Element {
	t.Helper()
	iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "q1", "from", from, "to", "upload.example.org")
	iq.Append(payload)
	h.out = nil
	h.handler(context.Background(), iq, jid.MustParse(from), jid.MustParse("upload.example.org"))
	if len(h.out) != 1 {
		t.Fatalf("want one reply, got %d", len(h.out))
	}
	return h.out[0]
}

func newService(t *testing.T, srvURL *string) (*Service, *host) {
	s := New(Config{Domain: "example.org", Service: "upload.example.org", Dir: t.TempDir(), MaxSize: 1000, Quota: 1500,
		Expire: time.Hour, BaseURL: func() string { return *srvURL }, Key: []byte("0123456789abcdef0123456789abcdef")})
	h := &host{}
	if err := s.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s, h
}

func request(name string, size string, ctype string) *xmlstream.Element {
	r := xmlstream.New(NS, "request", "filename", name, "size", size)
	if ctype != "" {
		r.SetAttr("content-type", ctype)
	}
	return r
}

func TestDiscoInfo(t *testing.T) {
	u := "http://x"
	_, h := newService(t, &u)
	r := h.ask(t, "alice@example.org/a", xmlstream.New(nsInfo, "query"))
	s := r.String()
	for _, want := range []string{`var='urn:xmpp:http:upload:0'`, `category='store'`, `var='max-file-size'`, ">1000<"} {
		if !strings.Contains(s, want) {
			t.Errorf("disco#info %s lacks %s", s, want)
		}
	}
}

func TestSlotPutGet(t *testing.T) {
	var base string
	s, h := newService(t, &base)
	ts := httptest.NewServer(s)
	defer ts.Close()
	base = ts.URL

	r := h.ask(t, "alice@example.org/a", request("my file.txt", "11", "text/plain"))
	if r.Attr("type") != "result" {
		t.Fatalf("slot refused: %s", r)
	}
	slot := r.Child(NS, "slot")
	put, get := slot.Child(NS, "put").Attr("url"), slot.Child(NS, "get").Attr("url")
	if !strings.HasPrefix(get, base+"/upload/") || strings.Contains(get, "?") {
		t.Fatalf("get url %q", get)
	}

	// CORS preflight
	req, _ := http.NewRequest(http.MethodOptions, put, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	// a tampered URL is refused
	do := func(method, url, ctype string, body []byte) int {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := do("PUT", strings.Replace(put, "size=11", "size=12", 1), "text/plain", []byte("hello world!")); c != http.StatusForbidden {
		t.Errorf("tampered size: %d", c)
	}
	if c := do("PUT", put, "text/plain", []byte("hello")); c != http.StatusBadRequest {
		t.Errorf("short body: %d", c)
	}
	if c := do("PUT", put, "text/plain", []byte("hello world")); c != http.StatusCreated {
		t.Fatalf("put: %d", c)
	}
	if c := do("PUT", put, "text/plain", []byte("hello world")); c != http.StatusConflict {
		t.Errorf("second put: %d", c)
	}
	resp, err = http.Get(get)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello world" || resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("get: %q %v", b, resp.Header)
	}

	// quota: 11 of 1500 used, 1000 more would pass, then 600 would not
	if r := h.ask(t, "alice@example.org/a", request("b", "1000", "")); r.Attr("type") != "result" {
		t.Fatalf("within quota refused: %s", r)
	}
	s.mu.Lock()
	s.usage["alice@example.org"] = 1000
	s.mu.Unlock()
	if r := h.ask(t, "alice@example.org/a", request("c", "600", "")); !strings.Contains(r.String(), "resource-constraint") {
		t.Errorf("over quota: %s", r)
	}

	// expiry: the sweep removes the file once it is older than Expire
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	s.Sweep()
	if c := do("GET", get, "", nil); c != http.StatusNotFound {
		t.Errorf("expired file still served: %d", c)
	}
	if ents, _ := os.ReadDir(s.cfg.Dir); len(ents) != 0 {
		t.Errorf("expired upload left: %v", ents)
	}
}

func TestSlotErrors(t *testing.T) {
	u := "http://x"
	_, h := newService(t, &u)
	r := h.ask(t, "alice@example.org/a", request("big", "1001", ""))
	s := r.String()
	if r.Attr("type") != "error" || !strings.Contains(s, "not-acceptable") || !strings.Contains(s, "file-too-large") || !strings.Contains(s, "<max-file-size>1000</max-file-size>") {
		t.Errorf("too large: %s", s)
	}
	if r := h.ask(t, "mallory@evil.example/a", request("x", "1", "")); !strings.Contains(r.String(), "not-allowed") {
		t.Errorf("foreign user: %s", r)
	}
	if r := h.ask(t, "alice@example.org/a", request("", "1", "")); !strings.Contains(r.String(), "bad-request") {
		t.Errorf("no name: %s", r)
	}
	if r := h.ask(t, "alice@example.org/a", xmlstream.New("urn:other", "x")); !strings.Contains(r.String(), "service-unavailable") {
		t.Errorf("unknown payload: %s", r)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"a/b": "a_b", "..": "_", ".hidden": "_hidden", "x\ny": "x_y", "ok.png": "ok.png"} {
		if got := cleanName(in); got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
	}
	if strings.Contains(filepath.Clean(cleanName("../../etc/passwd")), "/") {
		t.Error("path separator kept")
	}
}
