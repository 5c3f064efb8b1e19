package c2s

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
