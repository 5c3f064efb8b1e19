package c2s

import (
	"log/slog"
	"sync"
	"time"
)

// throttle counts failed authentications per source IP. After max failures within
// window the IP is refused (<temporary-auth-failure/>) until window has passed since
// its last failure; the refusal is logged once per blocking.
type throttle struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	log    *slog.Logger
	what   string // logged once when an address becomes blocked
	ips    map[string]*failures
}

type failures struct {
	n       int
	last    time.Time
	blocked bool
}

func newThrottle(max int, window time.Duration, log *slog.Logger) *throttle {
	return &throttle{max: max, window: window, now: time.Now, log: log, ips: map[string]*failures{},
		what: "too many failed authentications; refusing this address for a while"}
}

// Blocked reports whether ip is refused now.
func (t *throttle) Blocked(ip string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.ips[ip]
	if f == nil {
		return false
	}
	if t.now().Sub(f.last) > t.window {
		delete(t.ips, ip)
		return false
	}
	return f.n >= t.max
}

// Fail records a failure for ip.
func (t *throttle) Fail(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f := t.ips[ip]
	if f == nil || now.Sub(f.last) > t.window {
		f = &failures{}
		t.ips[ip] = f
	}
	f.n++
	f.last = now
	if f.n >= t.max && !f.blocked {
		f.blocked = true
		t.log.Warn(t.what, "ip", ip, "count", f.n, "for", t.window)
	}
	if len(t.ips) > 100000 { // bound memory under a distributed attack
		for k, v := range t.ips {
			if now.Sub(v.last) > t.window {
				delete(t.ips, k)
			}
		}
	}
}

// Success forgets ip's failures.
func (t *throttle) Success(ip string) {
	t.mu.Lock()
	delete(t.ips, ip)
	t.mu.Unlock()
}
