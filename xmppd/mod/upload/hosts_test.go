package upload

import (
	"context"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// Virtual hosts: upload.a.example and upload.b.example are served together,
// and each gives slots to its own host's users only.
func TestServicePerHost(t *testing.T) {
	s := New(Config{Domain: "a.example", Service: "upload.a.example", Services: map[string]string{"upload.b.example": "b.example"},
		Dir: t.TempDir(), MaxSize: 1000, BaseURL: func() string { return "http://x" }, Key: []byte("0123456789abcdef0123456789abcdef"), Expire: time.Hour})
	h := &host{}
	if err := s.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	if len(h.handlers) != 2 || h.handlers["upload.b.example"] == nil || strings.Join(s.Services(), ",") != "upload.a.example,upload.b.example" {
		t.Fatalf("services registered: %v", s.Services())
	}
	for _, c := range []struct {
		from, svc string
		ok        bool
	}{
		{"alice@a.example/r", "upload.a.example", true},
		{"alice@b.example/r", "upload.b.example", true},
		{"alice@a.example/r", "upload.b.example", false},
		{"alice@b.example/r", "upload.a.example", false},
	} {
		iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "q", "from", c.from, "to", c.svc)
		iq.Append(request("f.txt", "10", "text/plain"))
		h.out = nil
		h.handlers[c.svc](context.Background(), iq, jid.MustParse(c.from), jid.MustParse(c.svc))
		if len(h.out) != 1 {
			t.Fatalf("%s to %s: %d replies", c.from, c.svc, len(h.out))
		}
		r := h.out[0]
		if got := r.Attr("type") == "result"; got != c.ok {
			t.Fatalf("%s to %s: %s", c.from, c.svc, r)
		}
		if !c.ok && !strings.Contains(r.String(), "not-allowed") {
			t.Fatalf("%s to %s: %s", c.from, c.svc, r)
		}
	}
}
