package websocket

import (
	"encoding/json"
	"encoding/xml"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/coder/websocket"
)

// Path is where the endpoint is mounted.
const Path = "/xmpp-websocket"

// Options configure the endpoint.
type Options struct {
	// Serve runs one client stream on nc (c2s.Server.ServeConn) and returns when
	// it has ended.
	Serve func(nc net.Conn, secure bool) error
	// TLS: the HTTP listener serves HTTPS, so every stream is secure. Otherwise
	// only streams from loopback peers (a TLS-terminating proxy on the node) are.
	TLS bool
	// MaxMessage bounds one incoming message (the stanza size limit plus slack).
	MaxMessage int64
	// Origins are the allowed Origin host patterns (path.Match syntax) for
	// browser clients; empty allows any origin (XMPP authenticates the user, not
	// a cookie, so cross-site requests gain nothing).
	Origins []string
	Logger  *slog.Logger
}

// Handler returns the http.Handler for Path.
func Handler(o Options) http.Handler {
	if o.MaxMessage <= 0 {
		o.MaxMessage = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "websocket")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ao := &websocket.AcceptOptions{Subprotocols: []string{"xmpp"}, OriginPatterns: o.Origins}
		if len(o.Origins) == 0 {
			ao.InsecureSkipVerify = true // any Origin: see Options.Origins
		}
		ws, err := websocket.Accept(w, r, ao)
		if err != nil {
			log.Debug("websocket handshake refused", "remote", r.RemoteAddr, "err", err)
			return // Accept wrote the HTTP error
		}
		if ws.Subprotocol() != "xmpp" {
			// RFC 7395 §3.2: the client must ask for "xmpp".
			ws.Close(websocket.StatusPolicyViolation, "the xmpp subprotocol is required")
			return
		}
		remote := tcpAddr(r.RemoteAddr)
		secure := o.TLS || r.TLS != nil
		if !secure {
			if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && ap.Addr().IsLoopback() {
				secure = true
			}
		}
		var local net.Addr = remote
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = la
		}
		c := newConn(ws, local, remote, o.MaxMessage)
		if err := o.Serve(c, secure); err != nil {
			log.Debug("websocket stream not served", "remote", r.RemoteAddr, "err", err)
			ws.Close(websocket.StatusTryAgainLater, "server unavailable")
		}
	})
}

func tcpAddr(s string) net.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// URL returns the WebSocket URL of a listener whose base URL is base
// (http://host:port or https://host:port).
func URL(base string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		return "wss://" + strings.TrimPrefix(base, "https://") + Path
	case strings.HasPrefix(base, "http://"):
		return "ws://" + strings.TrimPrefix(base, "http://") + Path
	}
	return base + Path
}

const relWebSocket = "urn:xmpp:alt-connections:websocket"

// HostMeta returns the handler for /.well-known/host-meta (XRD) and
// /.well-known/host-meta.json (JRD), XEP-0156, listing the WebSocket URL that
// url returns for the request (so a node answers with the name it was reached
// by unless the operator fixed one).
func HostMeta(url func(r *http.Request) string) http.Handler {
	type link struct {
		XMLName xml.Name `xml:"Link" json:"-"`
		Rel     string   `xml:"rel,attr" json:"rel"`
		Href    string   `xml:"href,attr" json:"href"`
	}
	type xrd struct {
		XMLName xml.Name `xml:"http://docs.oasis-open.org/ns/xri/xrd-1.0 XRD"`
		Links   []link   `xml:"Link"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		links := []link{{Rel: relWebSocket, Href: url(r)}}
		if strings.HasSuffix(r.URL.Path, ".json") {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"links": links})
			return
		}
		w.Header().Set("Content-Type", "application/xrd+xml")
		b, _ := xml.MarshalIndent(xrd{Links: links}, "", "  ")
		w.Write([]byte(xml.Header))
		w.Write(b)
		w.Write([]byte("\n"))
	})
}
