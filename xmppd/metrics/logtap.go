package metrics

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AuthFailedMsg is the message c2s logs (at info) for a failed authentication;
// LogTap counts those records as login failures.
const AuthFailedMsg = "authentication failed"

// Record is a warning or error kept for the web admin page.
type Record struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Attrs   string    `json:"attrs,omitempty"` // key=value ...
}

// LogTap is a slog handler in front of the real one: it counts records per
// level and failed authentications, and keeps the last warnings and errors in
// a ring, whatever the log level lets through to the real handler.
type LogTap struct {
	next  slog.Handler
	attrs []slog.Attr // from WithAttrs (rendered into Record.Attrs)
	group string
	st    *tapState
}

type tapState struct {
	counts     [4]atomic.Uint64 // debug, info, warn, error
	authFailed atomic.Uint64

	mu   sync.Mutex
	ring []Record
	pos  int
	full bool
}

// RingSize is how many warnings and errors LogTap keeps.
const RingSize = 200

// NewLogTap wraps next.
func NewLogTap(next slog.Handler) *LogTap {
	return &LogTap{next: next, st: &tapState{ring: make([]Record, RingSize)}}
}

// Enabled lets info and above through to Handle (to count them and to catch
// failed logins) and the rest as the real handler decides.
func (t *LogTap) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelInfo || t.next.Enabled(ctx, lv)
}

func levelIndex(lv slog.Level) int {
	switch {
	case lv >= slog.LevelError:
		return 3
	case lv >= slog.LevelWarn:
		return 2
	case lv >= slog.LevelInfo:
		return 1
	}
	return 0
}

// Handle counts r, keeps it if it is a warning or an error, and passes it on
// if the real handler wants it.
func (t *LogTap) Handle(ctx context.Context, r slog.Record) error {
	t.st.counts[levelIndex(r.Level)].Add(1)
	if r.Message == AuthFailedMsg {
		t.st.authFailed.Add(1)
	}
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		add := func(a slog.Attr) bool {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(a.Key)
			b.WriteByte('=')
			b.WriteString(a.Value.String())
			return b.Len() < 1024
		}
		for _, a := range t.attrs {
			add(a)
		}
		r.Attrs(add)
		t.st.push(Record{Time: r.Time, Level: r.Level.String(), Message: r.Message, Attrs: b.String()})
	}
	if !t.next.Enabled(ctx, r.Level) {
		return nil
	}
	return t.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (t *LogTap) WithAttrs(as []slog.Attr) slog.Handler {
	n := *t
	n.next = t.next.WithAttrs(as)
	n.attrs = append(append([]slog.Attr(nil), t.attrs...), as...)
	return &n
}

// WithGroup implements slog.Handler.
func (t *LogTap) WithGroup(name string) slog.Handler {
	n := *t
	n.next = t.next.WithGroup(name)
	return &n
}

func (s *tapState) push(r Record) {
	s.mu.Lock()
	s.ring[s.pos] = r
	s.pos = (s.pos + 1) % len(s.ring)
	if s.pos == 0 {
		s.full = true
	}
	s.mu.Unlock()
}

// Recent returns the kept warnings and errors, newest first.
func (t *LogTap) Recent() []Record {
	s := t.st
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.pos
	if s.full {
		n = len(s.ring)
	}
	out := make([]Record, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, s.ring[(s.pos-i+len(s.ring))%len(s.ring)])
	}
	return out
}

// AuthFailures is the number of failed authentications logged so far.
func (t *LogTap) AuthFailures() uint64 { return t.st.authFailed.Load() }

// Collector exports xmppd_log_records_total{level} and
// xmppd_login_failures_total.
func (t *LogTap) Collector() prometheus.Collector { return tapCollector{t} }

var (
	logDesc  = prometheus.NewDesc("xmppd_log_records_total", "Log records by level (counted whatever the log level shows).", []string{"level"}, nil)
	authDesc = prometheus.NewDesc("xmppd_login_failures_total", "Failed client authentications (SASL failures).", nil, nil)
)

type tapCollector struct{ t *LogTap }

func (c tapCollector) Describe(ch chan<- *prometheus.Desc) { ch <- logDesc; ch <- authDesc }

func (c tapCollector) Collect(ch chan<- prometheus.Metric) {
	for i, l := range []string{"debug", "info", "warn", "error"} {
		ch <- prometheus.MustNewConstMetric(logDesc, prometheus.CounterValue, float64(c.t.st.counts[i].Load()), l)
	}
	ch <- prometheus.MustNewConstMetric(authDesc, prometheus.CounterValue, float64(c.t.st.authFailed.Load()))
}

// Tap is the process's LogTap once main installed it (nil otherwise): the log
// is process-wide, so is its tap.
var tap atomic.Pointer[LogTap]

// InstallTap wraps next in a LogTap, makes it the process's (Tap), and returns it.
func InstallTap(next slog.Handler) *LogTap {
	t := NewLogTap(next)
	tap.Store(t)
	return t
}

// Tap returns the process's LogTap, or nil if main did not install one.
func Tap() *LogTap { return tap.Load() }
