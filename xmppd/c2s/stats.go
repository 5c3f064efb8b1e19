package c2s

// Stats is a snapshot of the c2s server for metrics.
type Stats struct {
	Conns      int // open client connections
	Parked     int // idle streams waiting in the poller without a goroutine
	SendQueued int // stanzas and nonzas queued for writing, all sessions
	Unacked    int // XEP-0198 stanzas not yet acknowledged, all sessions
	Detached   int // resumable sessions without a connection (waiting for resumption)
}

// Stats walks the connections and resumable sessions (cheap enough at scrape time).
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Conns: len(s.conns)}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	var resumable []*session
	for _, ss := range s.resumable {
		resumable = append(resumable, ss)
	}
	s.mu.Unlock()
	st.Parked, _ = s.poller.stats()
	seen := map[*session]bool{}
	count := func(ss *session) {
		if ss == nil || seen[ss] {
			return
		}
		seen[ss] = true
		ss.mu.Lock()
		st.SendQueued += len(ss.queue)
		st.Unacked += len(ss.unacked)
		if ss.c == nil && !ss.terminated {
			st.Detached++
		}
		ss.mu.Unlock()
	}
	for _, c := range conns {
		count(c.session())
	}
	for _, ss := range resumable {
		count(ss)
	}
	return st
}
