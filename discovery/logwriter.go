package discovery

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// gossipLog turns serf's and memberlist's "[LEVEL] component: text" lines into
// slog records, and a gossip message this node cannot decrypt into one clear
// line naming the sender's address (rate-limited per sender).
type gossipLog struct {
	log *slog.Logger

	mu      sync.Mutex
	buf     bytes.Buffer
	lastKey map[netip.Addr]time.Time
	onKey   func(from string) // called for each refused sender (tests, status)
}

// keyErrorEvery is how often a refused sender is logged again.
const keyErrorEvery = 30 * time.Second

func (g *gossipLog) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.buf.Write(p)
	var lines []string
	for {
		i := bytes.IndexByte(g.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		lines = append(lines, string(g.buf.Next(i + 1)[:i]))
	}
	g.mu.Unlock()
	for _, l := range lines {
		g.line(l)
	}
	return len(p), nil
}

// keyErrors are memberlist's texts for traffic encrypted with another key, or
// not encrypted at all.
var keyErrors = []string{
	"no installed keys could decrypt the message",
	"encryption is configured but remote state is not encrypted",
	"remote state is encrypted and encryption is not configured",
	"Decrypt packet failed",
	"message is too small to decrypt", "payload is too small to decrypt",
}

// IsKeyError reports whether a memberlist error text means the peer uses
// another cluster key.
func IsKeyError(text string) bool {
	for _, k := range keyErrors {
		if strings.Contains(strings.ToLower(text), strings.ToLower(k)) {
			return true
		}
	}
	return false
}

func (g *gossipLog) line(l string) {
	level := slog.LevelInfo
	msg := strings.TrimSpace(l)
	if strings.HasPrefix(msg, "[") {
		if i := strings.IndexByte(msg, ']'); i > 0 {
			switch msg[1:i] {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelWarn // memberlist logs transient network errors as ERR
			}
			msg = strings.TrimSpace(msg[i+1:])
		}
	}
	if strings.Contains(msg, "memberlist: failed to join ") || strings.Contains(msg, "memberlist: Failed to join ") {
		// The agent explains a failed join itself (JoinError), in one line.
		level = slog.LevelDebug
	} else if IsKeyError(msg) {
		g.keyError(msg)
		return
	}
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	g.log.Log(context.Background(), level, msg, "component", "gossip")
}

// keyError logs once per sender and keyErrorEvery: which address sent gossip
// this node cannot decrypt.
func (g *gossipLog) keyError(msg string) {
	from := ""
	if i := strings.Index(msg, "from="); i >= 0 {
		from = strings.Fields(msg[i+len("from="):])[0]
	}
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(from); err == nil {
		ip = ap.Addr()
	}
	g.mu.Lock()
	if g.lastKey == nil {
		g.lastKey = map[netip.Addr]time.Time{}
	}
	if t, ok := g.lastKey[ip]; ok && time.Since(t) < keyErrorEvery {
		g.mu.Unlock()
		return
	}
	g.lastKey[ip] = time.Now()
	cb := g.onKey
	g.mu.Unlock()
	host := from
	if ip.IsValid() {
		host = ip.String()
	}
	if host == "" {
		host = "an unknown address"
	}
	g.log.Error("refused gossip from "+host+": wrong cluster key (its messages cannot be decrypted with this cluster's key)",
		"component", "discovery", "from", from, "detail", oneLine(msg))
	if cb != nil {
		cb(from)
	}
}

// oneLine flattens a (multi-line) error text.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "\t", " ")
	return strings.Join(strings.Fields(s), " ")
}
