package c2s

import "sync"

// FlagDetached is the session flag (router.SetSessionFlag) other nodes see while
// a session waits for XEP-0198 resumption with no connection.
const FlagDetached = "detached"

// Detached reports whether the session waits for XEP-0198 resumption with no
// connection: what it is sent now is kept, but nobody reads it (the push module
// notifies the account's app server then).
func (s *session) Detached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c == nil && !s.terminated
}

// detachFlagMu orders the publications of the detached flag, so the last one
// written is the session's state at that time (a resumption racing the detach
// of the same session must not leave the flag set). Detaching and resuming are
// rare: one mutex for the server is enough.
var detachFlagMu sync.Mutex

// publishDetached publishes the session's detached flag as it is now.
func (s *session) publishDetached() {
	detachFlagMu.Lock()
	defer detachFlagMu.Unlock()
	s.srv.router.SetSessionFlag(s, FlagDetached, s.Detached())
}
