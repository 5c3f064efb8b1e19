// Package extdisco implements external service discovery (XEP-0215,
// urn:xmpp:extdisco:2) for the STUN/TURN servers the operator configures: the
// server answers <services/> (optionally filtered by type) and <credentials/>,
// and with a shared secret hands out time-limited TURN credentials in the
// format coturn's use-auth-secret checks (username "EXPIRY:user", password
// base64(HMAC-SHA1(secret, username))).
//
// It must not import the xmppd core or other modules.
package extdisco

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// NS is the XEP-0215 namespace.
const NS = "urn:xmpp:extdisco:2"

// Service is one external service.
type Service struct {
	Type      string // stun, turn, stuns, turns
	Host      string
	Port      int
	Transport string // udp or tcp ("" : unspecified)
}

// Parse reads a comma-separated list of TYPE:HOST:PORT[/TRANSPORT].
func Parse(s string) ([]Service, error) {
	var out []Service
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		spec, tr, _ := strings.Cut(item, "/")
		typ, rest, ok := strings.Cut(spec, ":")
		i := strings.LastIndex(rest, ":")
		if !ok || i <= 0 {
			return nil, fmt.Errorf("external service %q: want TYPE:HOST:PORT[/udp|/tcp]", item)
		}
		port, err := strconv.Atoi(rest[i+1:])
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("external service %q: bad port", item)
		}
		switch typ {
		case "stun", "stuns", "turn", "turns":
		default:
			return nil, fmt.Errorf("external service %q: type must be stun, stuns, turn or turns", item)
		}
		if tr != "" && tr != "udp" && tr != "tcp" {
			return nil, fmt.Errorf("external service %q: transport must be udp or tcp", item)
		}
		out = append(out, Service{Type: typ, Host: strings.Trim(rest[:i], "[]"), Port: port, Transport: tr})
	}
	return out, nil
}

// Module answers XEP-0215 requests to the server.
type Module struct {
	services []Service
	secret   string        // TURN REST shared secret ("": no credentials)
	ttl      time.Duration // lifetime of handed-out credentials
	now      func() time.Time
}

// New returns the module.
func New(services []Service, secret string, ttl time.Duration) *Module {
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	return &Module{services: services, secret: secret, ttl: ttl, now: time.Now}
}

// Name implements module.Module.
func (*Module) Name() string { return "extdisco" }

// Start registers the handler.
func (m *Module) Start(_ context.Context, h module.Host) error {
	h.HandleIQ(NS, m.iq)
	h.DiscoFeature(NS)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	st, p := iq.Stanza, iq.Payload()
	if !iq.To.IsServer() || st.Attr("type") != "get" || (p.Local != "services" && p.Local != "credentials") {
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
		return
	}
	if !module.IsLocal(h, iq.From.Domain) {
		h.Route(ctx, module.Error(st, module.ErrAuth, "forbidden", "external services are for local users"))
		return
	}
	res := xmlstream.New(NS, p.Local)
	if p.Local == "services" {
		typ := p.Attr("type")
		if typ != "" {
			res.SetAttr("type", typ)
		}
		for _, s := range m.services {
			if typ == "" || typ == s.Type {
				res.Append(m.element(s, iq.From.Local))
			}
		}
	} else {
		want := p.Child(NS, "service")
		if want == nil {
			h.Route(ctx, module.Error(st, module.ErrModify, "bad-request", "name a service"))
			return
		}
		found := false
		for _, s := range m.services {
			if s.Host == want.Attr("host") && (want.Attr("type") == "" || want.Attr("type") == s.Type) &&
				(want.Attr("port") == "" || want.Attr("port") == strconv.Itoa(s.Port)) {
				res.Append(m.element(s, iq.From.Local))
				found = true
			}
		}
		if !found {
			h.Route(ctx, module.Error(st, module.ErrCancel, "item-not-found", ""))
			return
		}
	}
	h.Route(ctx, module.Result(st, res))
}

func (m *Module) element(s Service, user string) *xmlstream.Element {
	e := xmlstream.New(NS, "service", "type", s.Type, "host", s.Host, "port", strconv.Itoa(s.Port))
	if s.Transport != "" {
		e.SetAttr("transport", s.Transport)
	}
	if (s.Type == "turn" || s.Type == "turns") && m.secret != "" {
		exp := m.now().Add(m.ttl)
		name := strconv.FormatInt(exp.Unix(), 10) + ":" + user
		mac := hmac.New(sha1.New, []byte(m.secret))
		mac.Write([]byte(name))
		e.SetAttr("restricted", "1")
		e.SetAttr("username", name)
		e.SetAttr("password", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		e.SetAttr("expires", exp.UTC().Format(time.RFC3339))
	}
	return e
}
