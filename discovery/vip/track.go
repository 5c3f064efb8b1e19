package vip

import (
	"sync"
	"time"
)

// Track is a health check in keepalived's vrrp_script terms: it goes down after Fall
// consecutive failures and up after Rise consecutive successes. Weight 0 makes a
// down track a fault (the node holds no VIP); a positive weight is added to the
// priority while the track is up; a negative weight is subtracted while it is down.
type Track struct {
	Name     string
	Weight   int // -253..253
	Rise     int // successes to go up (default 1)
	Fall     int // failures to go down (default 1)
	InitFail bool
}

// TrackStatus is one track's state, for `xmppctl vip`.
type TrackStatus struct {
	Name      string    `json:"name"`
	Up        bool      `json:"up"`
	Weight    int       `json:"weight"`
	Rise      int       `json:"rise"`
	Fall      int       `json:"fall"`
	Successes int       `json:"successes"` // consecutive
	Failures  int       `json:"failures"`  // consecutive
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"` // last up/down change
	Checked   time.Time `json:"checked"`
}

// Health combines a base priority and tracks into an effective priority and a fault
// flag. It is a pure state machine fed by Observe; safe for concurrent use.
type Health struct {
	mu     sync.Mutex
	base   int
	tracks []*TrackStatus
}

// NewHealth returns the health of a node with base priority and tracks.
func NewHealth(base int, tracks []Track, now time.Time) *Health {
	h := &Health{base: base}
	for _, t := range tracks {
		if t.Rise <= 0 {
			t.Rise = 1
		}
		if t.Fall <= 0 {
			t.Fall = 1
		}
		h.tracks = append(h.tracks, &TrackStatus{Name: t.Name, Up: !t.InitFail, Weight: t.Weight, Rise: t.Rise, Fall: t.Fall, Since: now})
	}
	return h
}

// Observe records one check result of the named track and reports whether the
// track changed state.
func (h *Health) Observe(name string, err error, now time.Time) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.tracks {
		if t.Name != name {
			continue
		}
		t.Checked = now
		if err == nil {
			t.Successes++
			t.Failures = 0
			t.LastError = ""
			if !t.Up && t.Successes >= t.Rise {
				t.Up, t.Since, changed = true, now, true
			}
		} else {
			t.Failures++
			t.Successes = 0
			t.LastError = err.Error()
			if t.Up && t.Failures >= t.Fall {
				t.Up, t.Since, changed = false, now, true
			}
		}
	}
	return changed
}

// Effective returns the effective priority (clamped to 1..254) and whether the node
// is healthy (no weight-0 track down).
func (h *Health) Effective() (priority int, healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.base, true
	for _, t := range h.tracks {
		switch {
		case t.Weight == 0 && !t.Up:
			ok = false
		case t.Weight > 0 && t.Up:
			p += t.Weight
		case t.Weight < 0 && !t.Up:
			p += t.Weight
		}
	}
	return min(max(p, 1), 254), ok
}

// Tracks returns a copy of every track's state.
func (h *Health) Tracks() []TrackStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]TrackStatus, len(h.tracks))
	for i, t := range h.tracks {
		out[i] = *t
	}
	return out
}
