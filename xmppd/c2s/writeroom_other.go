//go:build !linux

package c2s

// writeRoom: without a way to see a socket's queue, every write goes through a
// writer goroutine.
func (s *session) writeRoom(*conn, int) bool { return false }
