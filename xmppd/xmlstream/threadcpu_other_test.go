//go:build !linux

package xmlstream

import "time"

// threadCPU returns fn's wall time where thread CPU clocks are not used.
func threadCPU(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}
