//go:build race

package c2s

// raceEnabled: built with -race. The net package's reads and writes tell the
// race detector that whatever a goroutine did before writing to a socket
// happened before what a reader of any socket does next; a raw read (tryConn)
// bypasses that, so under -race reads take the connection's own path, and
// state handed over through the network (a test's server set-up, then a dial)
// stays ordered for the detector as it is in fact.
const raceEnabled = true
