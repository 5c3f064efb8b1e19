package c2s

import (
	"net"
	"sync"
	"time"
)

// bucket is a token bucket over bytes (ejabberd's c2s_shaper): a connection may read
// rate bytes per second on average with bursts of up to burst bytes.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBucket(rate int) *bucket {
	b := &bucket{rate: float64(rate), burst: float64(rate), now: time.Now}
	if b.burst < 4096 {
		b.burst = 4096
	}
	b.tokens = b.burst
	b.last = b.now()
	return b
}

// take consumes n bytes and returns how long the reader must pause before reading
// again to stay within the rate.
func (b *bucket) take(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// shapedConn slows reads down to the bucket's rate. It wraps the raw TCP connection
// (below TLS), so every byte the client sends counts.
type shapedConn struct {
	net.Conn
	b *bucket
}

func (c *shapedConn) Read(p []byte) (int, error) {
	if len(p) > int(c.b.burst) {
		p = p[:int(c.b.burst)]
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if d := c.b.take(n); d > 0 {
			time.Sleep(d)
		}
	}
	return n, err
}
